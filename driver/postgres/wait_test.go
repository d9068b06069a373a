package postgres

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// holdKey holds key in namespace ns on a client of its own until the test
// ends.
func holdKey(t *testing.T, dsn, ns, key string) *mutex.Lease {
	t.Helper()
	holder, _ := testClient(t, dsn, ns)
	lease, err := holder.NewMutex(key).TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lease.Unlock(context.Background()) })
	return lease
}

// holderAndWaiter opens two clients of one fresh namespace on the shared
// server, a (to hold keys) and w (with opts, to wait), and returns them with
// an administrator's connection pool and the namespace.
func holderAndWaiter(t *testing.T, opts ...Option) (db *sql.DB, ns string, a, w *locker) {
	t.Helper()
	dsn, db := adminDB(t)
	ns = namespace(t)
	_, a = testClient(t, dsn, ns)
	_, w = testClient(t, dsn, ns, opts...)
	return db, ns, a, w
}

// smallPool is an application's pool of at most n connections.
func smallPool(t *testing.T, dsn string, n int) *sql.DB {
	t.Helper()
	app, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	app.SetMaxOpenConns(n)
	return app
}

// takeKept makes owner wo of w wait for key, held by a, releases it, and
// returns once the key kept for wo is its grant.
func takeKept(t *testing.T, a, w *locker, key string, pause time.Duration) driver.Owner {
	t.Helper()
	ctx := t.Context()
	ao, wo := driver.NewOwner(), driver.NewOwner()
	if _, err := a.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: ao}); err != nil {
		t.Fatalf("holder: %v", err)
	}
	if _, err := w.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: wo, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiter: %v; want ErrLocked", err)
	}
	time.Sleep(pause)
	if err := a.Release(ctx, key, ao); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := w.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: wo, Wait: true})
		if err == nil {
			return wo
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiter not served within 10s: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// PostgreSQL can grant a waiting pg_advisory_lock and still end it with
// lock_timeout (the timeout fires as the grant lands; the session lock
// outlives the failed statement). The driver asks the session whether it
// holds the key rather than asking again, which would stack the lock: after
// the owner's Release the key is free, not left on an idle waiter session.
// A lock_timeout of 20 ms, and releases at random times within it, make the
// race common (before the fix it showed within a few hundred trials).
func TestQueueLockTimeoutAsGrantedNotStacked(t *testing.T) {
	db, ns, a, w := holderAndWaiter(t, withServerWait(20*time.Millisecond))
	const key = "k"
	for i := range 500 {
		wo := takeKept(t, a, w, key, time.Duration(rand.IntN(20000))*time.Microsecond)
		if stmt, lock := heldWaiterSettings(t, w, key); stmt != w.cfg.stmtTimeout.Milliseconds() || lock != stmt {
			t.Fatalf("trial %d: the waiter session holding the key has statement_timeout %d ms, lock_timeout %d ms; want a lock session's", i, stmt, lock)
		}
		if err := w.Release(t.Context(), key, wo); err != nil {
			t.Fatal(err)
		}
		if n := requestsOn(t, db, ns, key, true); n != 0 {
			t.Fatalf("trial %d: after both owners released, %d grants of the key remain on the server", i, n)
		}
	}
}

// A waiter session frees whatever it holds as it goes idle: a grant
// stacked on it (here by hand) does not outlive the owner's Release.
func TestQueueWaiterSessionClearedWhenIdle(t *testing.T) {
	db, ns, a, w := holderAndWaiter(t)
	const key = "k"
	wo := takeKept(t, a, w, key, 0)
	w.mu.Lock()
	s := w.held[key].s
	w.mu.Unlock()
	s.sem <- struct{}{}
	_, err := s.conn.ExecContext(background, `SELECT pg_advisory_lock($1)`, KeyID(ns, key))
	s.give()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Release(t.Context(), key, wo); err != nil {
		t.Fatal(err)
	}
	if n := requestsOn(t, db, ns, key, true); n != 0 {
		t.Fatalf("after the Release, %d grants of the key remain on the idle waiter session", n)
	}
}

// idleWaiterSettings reads statement_timeout and lock_timeout (ms) on w's
// idle waiter session.
func idleWaiterSettings(t *testing.T, w *locker) (stmt, lock int64) {
	t.Helper()
	w.mu.Lock()
	if len(w.idle) == 0 {
		w.mu.Unlock()
		t.Fatal("no idle waiter session")
	}
	s := w.idle[0]
	w.mu.Unlock()
	return sessionSettings(t, s)
}

// sessionSettings reads statement_timeout and lock_timeout (ms) on s.
func sessionSettings(t *testing.T, s *session) (stmt, lock int64) {
	t.Helper()
	s.sem <- struct{}{}
	defer s.give()
	if err := s.queryRow(`SELECT EXTRACT(epoch FROM current_setting('statement_timeout')::interval)::bigint * 1000,
		EXTRACT(epoch FROM current_setting('lock_timeout')::interval)::bigint * 1000`, nil, &stmt, &lock); err != nil {
		t.Fatal(err)
	}
	return stmt, lock
}

// A wait in the server lasts minutes before it is made again (at the
// tail), so a queue that takes long to drain keeps its order: the waiter
// session's lock_timeout is serverWaitFor, and its statement timeout and
// the client's wait for the reply are longer.
func TestQueueWaitLastsMinutes(t *testing.T) {
	_, _, a, w := holderAndWaiter(t)
	wo := takeKept(t, a, w, "k", 0)
	if err := w.Release(t.Context(), "k", wo); err != nil {
		t.Fatal(err)
	}
	stmt, lock := idleWaiterSettings(t, w)
	if lock < (5*time.Minute).Milliseconds() || stmt <= lock || w.cfg.serverWait+w.cfg.replyTimeout() <= time.Duration(stmt)*time.Millisecond {
		t.Fatalf("waiter session: lock_timeout %d ms, statement_timeout %d ms, reply awaited %v; want at least 5 min, longer, longer",
			lock, stmt, w.cfg.serverWait+w.cfg.replyTimeout())
	}
}

// Close ends a client's waits in the server even when the application's
// pool (FromDB) has no connection to spare: the cancel goes on one of the
// client's own free sessions. Before, it waited for a pool connection that
// only Close itself would free, so the wait stayed in the server's queue
// after Close, with its goroutine and connections.
func TestQueueCloseOnFullPool(t *testing.T) {
	for _, busy := range []bool{false, true} {
		t.Run(fmt.Sprintf("LockSessionBusy=%v", busy), func(t *testing.T) {
			dsn, db := adminDB(t)
			ns := namespace(t)
			holdKey(t, dsn, ns, "k")
			app := smallPool(t, dsn, 2) // a lock session and a waiter session
			before := runtime.NumGoroutine()
			w, wl := wrapClient(t, FromDB(app, WithNamespace(ns)))
			got := lockAsync(t.Context(), w.NewMutex("k"))
			waitFor(t, "the Lock in the server's queue", func() bool { return waitingIn(t, db, ns, "k") == 1 })
			if busy { // a statement in flight on it as Close begins
				wl.mu.Lock()
				s := wl.sessions[0]
				wl.mu.Unlock()
				s.sem <- struct{}{}
				time.AfterFunc(100*time.Millisecond, s.give)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if n := waitingIn(t, db, ns, "k"); n != 0 {
				t.Fatalf("Close returned with %d waits of its client in the server's queue", n)
			}
			if l := <-got; l != nil {
				t.Fatal("the Lock got the key after Close")
			}
			waitFor(t, "the application's pool emptied", func() bool { return app.Stats().OpenConnections == 0 })
			waitFor(t, "the client's goroutines gone", func() bool { return runtime.NumGoroutine() <= before })
		})
	}
}

// A key kept for a waiter is checked before it is handed over when the
// server granted it a while ago: a waiter session that died since (here
// terminated on the server while idle) gives no grant, and the owner's
// attempt returns ErrLocked (its Lock asks again) instead of a lease lost
// at the next heartbeat.
func TestQueueKeptKeyCheckedWhenStale(t *testing.T) {
	db, ns, a, w := holderAndWaiter(t)
	ctx := t.Context()
	ao, wo := driver.NewOwner(), driver.NewOwner()
	if _, err := a.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: ao}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: wo, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiter: %v; want ErrLocked", err)
	}
	if err := a.Release(ctx, "k", ao); err != nil {
		t.Fatal(err)
	}
	var pid int
	waitFor(t, "the key kept for the waiter", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		h := w.held["k"]
		if h != nil && h.w != nil && h.w.kept {
			pid = h.w.s.pid
		}
		return pid != 0
	})
	if _, err := db.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the waiter session gone", func() bool { return requestsOn(t, db, ns, "k", true) == 0 })
	time.Sleep(2 * keptFresh)
	if _, err := w.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: wo, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("claiming the key kept on a dead waiter session: %v; want ErrLocked", err)
	}
}

// fakeWait records a wait of owner for key on a waiter session that is
// backend pid, begun at started: a pid the server may have given since to
// another backend. Only the cancel of Release or Close reaches it.
func fakeWait(l *locker, key string, owner driver.Owner, pid int, started sql.NullTime) *wait {
	s := &session{l: l, pid: pid, started: started, waiter: true, sem: make(chan struct{}, 1), stop: make(chan struct{})}
	h := &hold{key: key, id: KeyID(l.cfg.namespace, key), owner: owner}
	h.w = &wait{h: h, s: s, sent: true, replied: make(chan struct{}), ended: make(chan struct{}), timer: time.NewTimer(time.Hour)}
	l.mu.Lock()
	l.held[key] = h
	l.mu.Unlock()
	return h.w
}

// The cancels that end waits (Release's, Close's) reach only the waiter
// session's own request for its key: a backend with the same pid that is
// not that session (another backend_start), or the session's request for
// another key, is left waiting.
func TestQueueCancelOnlyTheWait(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	holdKey(t, dsn, ns, "k")
	for _, tc := range []struct {
		name          string
		key           string        // of the fake wait: the foreign backend waits for "k"
		startedOffset time.Duration // of the fake wait's session, from the foreign backend's
		byClose       bool
	}{
		{"Release/OtherBackend", "k", time.Microsecond, false},
		{"Close/OtherBackend", "k", time.Microsecond, true},
		{"Close/OtherKey", "k2", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			foreign, err := db.Conn(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer foreign.Raw(func(any) error { return sqldriver.ErrBadConn })
			var pid int
			var started sql.NullTime
			if err := foreign.QueryRowContext(t.Context(), `SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()`).Scan(&pid, &started); err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			go func() {
				_, err := foreign.ExecContext(context.Background(), `SET statement_timeout = '20s'; SELECT pg_advisory_lock(`+strconv.FormatInt(KeyID(ns, "k"), 10)+`)`)
				waited <- err
			}()
			waitFor(t, "the foreign backend waiting", func() bool { return waitingIn(t, db, ns, "k") == 1 })
			_, w := testClient(t, dsn, ns)
			owner := driver.NewOwner()
			started.Time = started.Time.Add(tc.startedOffset)
			fw := fakeWait(w, tc.key, owner, pid, started)
			if !tc.byClose {
				w.Release(t.Context(), tc.key, owner)
				<-fw.ended // its cancel done
			}
			w.Close()
			select {
			case err := <-waited:
				t.Fatalf("the foreign backend's wait ended: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := db.Exec(`SELECT pg_cancel_backend($1)`, pid); err != nil {
				t.Fatal(err)
			}
			<-waited
		})
	}
}

// heldWaiterSettings reads statement_timeout and lock_timeout (ms) on the
// waiter session that holds key for w.
func heldWaiterSettings(t *testing.T, w *locker, key string) (stmt, lock int64) {
	t.Helper()
	w.mu.Lock()
	s := w.held[key].s
	w.mu.Unlock()
	return sessionSettings(t, s)
}

// A waiter session that holds the key it got has a lock session's
// statement_timeout and lock_timeout, matching the reply deadline its
// unlock, verification and fencing statements have; idle again, it has its
// waiting ones.
func TestQueueHeldWaiterHasLockSessionTimeouts(t *testing.T) {
	_, _, a, w := holderAndWaiter(t)
	for i := range 2 { // a new waiter session, then the same one again
		wo := takeKept(t, a, w, "k", 0)
		if stmt, lock := heldWaiterSettings(t, w, "k"); stmt != w.cfg.stmtTimeout.Milliseconds() || lock != stmt {
			t.Fatalf("wait %d: holding the key: statement_timeout %d ms, lock_timeout %d ms; want %v both", i, stmt, lock, w.cfg.stmtTimeout)
		}
		if err := w.Release(t.Context(), "k", wo); err != nil {
			t.Fatal(err)
		}
		if stmt, lock := idleWaiterSettings(t, w); lock != w.cfg.serverWait.Milliseconds() || stmt != (w.cfg.serverWait+w.cfg.stmtTimeout).Milliseconds() {
			t.Fatalf("wait %d: idle: statement_timeout %d ms, lock_timeout %d ms; want the waiting ones", i, stmt, lock)
		}
	}
}

// A wait cancelled from outside (an operator's pg_cancel_backend) is asked
// again on the same waiter session, which stays healthy, and the Lock is
// served at the release; before, the session was closed as if it had failed.
func TestQueueOutsideCancelKeepsSession(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	holder, _ := testClient(t, dsn, ns)
	lease, err := holder.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w, _ := testClient(t, dsn, ns)
	got := lockAsync(t.Context(), w.NewMutex("k"))
	waitFor(t, "the Lock in the server's queue", func() bool { return waitingIn(t, db, ns, "k") == 1 })
	pid := waiterPID(t, db, ns, "k")
	var cancelled time.Time
	if err := db.QueryRow(`SELECT now() FROM pg_cancel_backend($1)`, pid).Scan(&cancelled); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the wait asked again", func() bool {
		var again bool
		db.QueryRow(`SELECT query_start > $2 AND wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1`, pid, cancelled).Scan(&again)
		return again
	})
	if n, p := waitingIn(t, db, ns, "k"), waiterPID(t, db, ns, "k"); n != 1 || p != pid {
		t.Fatalf("after the cancel: %d waiting, on backend %d; want 1, on %d", n, p, pid)
	}
	if err := lease.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	served(t, got, "the Lock").Unlock(t.Context())
}

// A session whose setting changed under it, its pid the same, says so.
func TestCheckPIDSettingChanged(t *testing.T) {
	s := &session{pid: 42}
	err := s.checkPID(42, false)
	if !errors.Is(err, ErrTransactionPooling) || !strings.Contains(err.Error(), "changed on backend 42") {
		t.Fatalf("checkPID: %v", err)
	}
}

// A waiting attempt whose ctx ends while its waiter session is being
// opened (here: the application's pool has no connection to spare) returns
// an error matching ctx.Err(), not ErrLocked.
func TestQueueCtxEndsOpeningWaiterSession(t *testing.T) {
	dsn, _ := adminDB(t)
	ns := namespace(t)
	holdKey(t, dsn, ns, "k")
	app := smallPool(t, dsn, 1) // the lock session's
	_, w := wrapClient(t, FromDB(app, WithNamespace(ns)))
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := w.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), Wait: true})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire: %v; want one matching context.DeadlineExceeded", err)
	}
}

// A wait its owner ended (Release: a Lock that gave up as its client
// closes) whose cancel could not be sent yet (the lock session busy, no
// pool connection to spare) is cancelled by Close, which comes next:
// before, Close saw no wait and the request stayed in the server's queue.
func TestQueueCloseCancelsEndingWait(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	holdKey(t, dsn, ns, "k")
	app := smallPool(t, dsn, 2) // a lock session and a waiter session
	before := runtime.NumGoroutine()
	_, w := wrapClient(t, FromDB(app, WithNamespace(ns)))
	owner := driver.NewOwner()
	if _, err := w.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: owner, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("Acquire: %v; want ErrLocked", err)
	}
	w.mu.Lock()
	s := w.sessions[0]
	w.mu.Unlock()
	s.sem <- struct{}{} // a statement in flight on the lock session
	time.AfterFunc(100*time.Millisecond, s.give)
	if err := w.Release(t.Context(), "k", owner); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release of a wait: %v; want ErrNotHeld", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := waitingIn(t, db, ns, "k"); n != 0 {
		t.Fatalf("Close returned with %d waits of its client in the server's queue", n)
	}
	waitFor(t, "the application's pool emptied", func() bool { return app.Stats().OpenConnections == 0 })
	waitFor(t, "the client's goroutines gone", func() bool { return runtime.NumGoroutine() <= before })
}

// A waiting attempt on a key its locker found held lately queues in the
// server at once, with no try first (queueAtOnce). When the key turns out
// free, the owner's attempt returns the grant, held on the waiter session
// and fenced when asked; other clients are refused until its release frees
// the key. A key never found held is tried on a lock session.
func TestQueueBusyKeyQueuesAtOnce(t *testing.T) {
	_, _, a, w := holderAndWaiter(t)
	ctx := t.Context()
	onWaiterSession := func(owner driver.Owner) bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		h := w.held["k"]
		if h == nil || h.owner != owner || h.s == nil {
			t.Fatalf("owner %v holds no grant of k", owner)
		}
		return h.s.waiter
	}

	first := driver.NewOwner()
	g1, err := w.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: first, Wait: true, Fencing: true})
	if err != nil {
		t.Fatal(err)
	}
	if onWaiterSession(first) {
		t.Fatal("a key never found held was granted on a waiter session; want a lock session's try")
	}
	if err := w.Release(ctx, "k", first); err != nil {
		t.Fatal(err)
	}

	holder, gaveUp := driver.NewOwner(), driver.NewOwner()
	if _, err := a.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: holder}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: gaveUp, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt on a held key: %v; want ErrLocked", err)
	}
	if err := w.Release(ctx, "k", gaveUp); err != nil && !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("giving up the wait: %v", err)
	}
	if err := a.Release(ctx, "k", holder); err != nil {
		t.Fatal(err)
	}

	// The key is granted on the waiter session at once, or once the given
	// up wait's session is clear (its cancel may land after the release):
	// the attempt returns it, or a later one of the owner's does.
	busy := driver.NewOwner()
	var g driver.Grant
	waitFor(t, "the grant of a free key found held lately", func() bool {
		g, err = w.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: busy, Wait: true, Fencing: true})
		if err != nil && !errors.Is(err, driver.ErrLocked) {
			t.Fatalf("waiting attempt on a free key found held lately: %v", err)
		}
		return err == nil
	})
	if !onWaiterSession(busy) {
		t.Fatal("a key found held lately was tried on a lock session; want its request queued at once on a waiter session")
	}
	if g.Token <= g1.Token {
		t.Fatalf("fencing token %d after %d; want a larger one", g.Token, g1.Token)
	}
	if _, err := a.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("another client's attempt while the key is held on the waiter session: %v; want ErrLocked", err)
	}
	if err := w.Release(ctx, "k", busy); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()}); err != nil {
		t.Fatalf("another client's attempt once released: %v", err)
	}
}

// A kept key whose fencing statement fails (here its row is locked by
// another transaction past the statement timeout) is not the owner's: the
// attempt fails and the key is given back, as a try gives back a key whose
// fencing statement failed, rather than left held on the waiter session.
func TestQueueKeptKeyFencingFailureGivesItBack(t *testing.T) {
	db, ns, a, w := holderAndWaiter(t, WithStatementTimeout(200*time.Millisecond))
	ctx := t.Context()
	first := driver.NewOwner() // makes the key's fencing row
	if _, err := w.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: first, Fencing: true}); err != nil {
		t.Fatal(err)
	}
	if err := w.Release(ctx, "k", first); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`SELECT 1 FROM `+FencingTable+` WHERE key_id = $1 FOR UPDATE`, KeyID(ns, "k")); err != nil {
		t.Fatal(err)
	}

	holder, waiter := driver.NewOwner(), driver.NewOwner()
	if _, err := a.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: holder}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: waiter, Wait: true, Fencing: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt: %v; want ErrLocked", err)
	}
	if err := a.Release(ctx, "k", holder); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the kept key's fencing statement to fail", func() bool {
		_, err := w.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: waiter, Wait: true, Fencing: true})
		switch {
		case err == nil:
			t.Fatal("granted with the key's fencing row locked")
		case errors.Is(err, driver.ErrLocked):
			return false
		case !errors.Is(err, driver.ErrUnavailable):
			t.Fatalf("kept key's fencing statement timed out: %v; want ErrUnavailable", err)
		}
		return true
	})
	if _, err := a.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()}); err != nil {
		t.Fatalf("another client's attempt after the failed grant: %v; want the key given back", err)
	}
}

// The keys remembered as busy stay at most maxBusy: beyond, a new key is
// not remembered, until the lapsed ones are swept out (at most once per
// busyFor), which makes room again.
func TestBusyKeysBounded(t *testing.T) {
	l := &locker{busy: make(map[string]time.Time)}
	for i := range 2 * maxBusy {
		l.markBusy(strconv.Itoa(i))
	}
	if len(l.busy) != maxBusy {
		t.Fatalf("%d keys remembered as busy; want at most %d", len(l.busy), maxBusy)
	}
	if !l.waitAtOnceLocked("0") || l.waitAtOnceLocked(strconv.Itoa(maxBusy)) {
		t.Fatal("want the first keys remembered and those beyond the bound not")
	}
	lapsed := time.Now().Add(-busyFor)
	for k := range l.busy {
		l.busy[k] = lapsed
	}
	l.busySwept = lapsed
	l.markBusy("new")
	if len(l.busy) != 1 || !l.waitAtOnceLocked("new") || l.waitAtOnceLocked("0") {
		t.Fatalf("after the sweep %d keys remembered; want the new one alone", len(l.busy))
	}
}
