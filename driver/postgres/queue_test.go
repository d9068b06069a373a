package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// waitingIn counts the requests for key in namespace ns waiting in the
// server's lock queue (ungranted in pg_locks).
func waitingIn(t *testing.T, db *sql.DB, ns, key string) int {
	t.Helper()
	return requestsOn(t, db, ns, key, false)
}

// requestsOn counts the requests for key in namespace ns in pg_locks,
// granted or waiting.
func requestsOn(t *testing.T, db *sql.DB, ns, key string, granted bool) int {
	t.Helper()
	classid, objid := LockTag(KeyID(ns, key))
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted = $3
		AND classid = $1 AND objid = $2`, int64(classid), int64(objid), granted).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waiterPID is the backend of the one request for key waiting in the
// server.
func waiterPID(t *testing.T, db *sql.DB, ns, key string) int {
	t.Helper()
	classid, objid := LockTag(KeyID(ns, key))
	var pid int
	if err := db.QueryRow(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND NOT granted
		AND classid = $1 AND objid = $2`, int64(classid), int64(objid)).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// lockAsync runs m.Lock(ctx) and sends its lease (or error) on the channel
// returned.
func lockAsync(ctx context.Context, m *mutex.Mutex) <-chan *mutex.Lease {
	got := make(chan *mutex.Lease, 1)
	go func() {
		l, err := m.Lock(ctx)
		if err != nil {
			l = nil
		}
		got <- l
	}()
	return got
}

// served returns the lease got sends, failing t if the Lock failed or
// took longer than 30s.
func served(t *testing.T, got <-chan *mutex.Lease, who string) *mutex.Lease {
	t.Helper()
	select {
	case l := <-got:
		if l == nil {
			t.Fatalf("%s: Lock failed", who)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not served within 30s", who)
	}
	return nil
}

// Waiters of several clients are served in the order they arrived: the
// server's lock queue's order.
func TestQueueFIFOThroughMutex(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	const key, n = "k", 5
	holder, _ := testClient(t, dsn, ns)
	lease, err := holder.NewMutex(key).TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var waits []<-chan *mutex.Lease
	for i := range n {
		c, _ := testClient(t, dsn, ns)
		waits = append(waits, lockAsync(t.Context(), c.NewMutex(key)))
		waitFor(t, "the waiter in the server's queue", func() bool { return waitingIn(t, db, ns, key) == i+1 })
	}
	if err := lease.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, w := range waits {
		l := served(t, w, fmt.Sprint("waiter ", i+1))
		for j, o := range waits[i+1:] {
			select {
			case <-o:
				t.Fatalf("waiter %d served before waiter %d, which arrived first", i+j+2, i+1)
			default:
			}
		}
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// A Lock whose ctx ends leaves the queue: the next waiter is served at the
// release, without waiting out the place of the one that gave up; and a
// TryLock is refused while a waiter is queued, even when the key is free
// for a moment.
func TestQueueCancelledWaiterLeaves(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	const key = "k"
	holder, _ := testClient(t, dsn, ns)
	lease, err := holder.NewMutex(key).TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := testClient(t, dsn, ns)
	ctx, cancel := context.WithCancel(t.Context())
	gaveUp := lockAsync(ctx, b.NewMutex(key))
	waitFor(t, "b queued", func() bool { return waitingIn(t, db, ns, key) == 1 })
	c, _ := testClient(t, dsn, ns)
	next := lockAsync(t.Context(), c.NewMutex(key))
	waitFor(t, "c queued", func() bool { return waitingIn(t, db, ns, key) == 2 })
	stranger, _ := testClient(t, dsn, ns)
	if _, err := stranger.NewMutex(key).TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock while waiters are queued: %v; want ErrLocked", err)
	}
	cancel()
	if l := <-gaveUp; l != nil {
		t.Fatal("a cancelled Lock returned a lease")
	}
	waitFor(t, "b out of the queue", func() bool { return waitingIn(t, db, ns, key) == 1 })
	start := time.Now()
	if err := lease.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-next:
		if l == nil {
			t.Fatal("c: Lock failed")
		}
		t.Logf("c served %v after the release", time.Since(start).Round(time.Millisecond))
		l.Unlock(t.Context())
	case <-time.After(driver.QueueHold / 2):
		t.Fatalf("c not served within %v of the release: the place of the waiter that gave up held it up", driver.QueueHold/2)
	}
}

// A waiter whose waiter session is killed on the server (pg_terminate_backend)
// waits again, and is served once the key is released, never while the
// holder holds it; killed again once it holds the key, its lease is lost,
// and the next waiter is served.
func TestQueueWaiterSessionKilled(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	const key = "k"
	holder, _ := testClient(t, dsn, ns)
	lease, err := holder.NewMutex(key).TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w, _ := testClient(t, dsn, ns)
	got := lockAsync(t.Context(), w.NewMutex(key))
	waitFor(t, "the waiter in the server's queue", func() bool { return waitingIn(t, db, ns, key) == 1 })
	first := waiterPID(t, db, ns, key)
	classid, objid := LockTag(KeyID(ns, key))
	if _, err := db.Exec(`SELECT pg_terminate_backend($1)`, first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the waiter queued again", func() bool {
		// One query: the killed backend's request may be gone between two.
		var n, pid int
		db.QueryRow(`SELECT count(*), coalesce(min(pid), 0) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
			AND NOT granted AND classid = $1 AND objid = $2`, int64(classid), int64(objid)).Scan(&n, &pid)
		return n == 1 && pid != first
	})
	select {
	case <-got:
		t.Fatal("the waiter was served while the holder held the key")
	default:
	}
	if err := lease.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	wl := served(t, got, "the waiter")
	pid := holderPID(t, db, ns, key)
	next, _ := testClient(t, dsn, ns)
	nextGot := lockAsync(t.Context(), next.NewMutex(key))
	waitFor(t, "the next waiter in the server's queue", func() bool { return waitingIn(t, db, ns, key) == 1 })
	if _, err := db.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wl.Done():
		if !errors.Is(wl.Err(), mutex.ErrNotHeld) {
			t.Fatalf("the killed holder's lease: %v; want ErrNotHeld", wl.Err())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the killed holder's lease not reported lost within 30s")
	}
	served(t, nextGot, "the next waiter").Unlock(t.Context())
}

// A waiter that gives up once the key is kept for it (Release) passes it
// on: the next waiter is served at once, not QueueHold later.
func TestQueueKeptKeyPassedOn(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	const key = "k"
	_, a := testClient(t, dsn, ns)
	_, b := testClient(t, dsn, ns)
	_, c := testClient(t, dsn, ns)
	ctx := t.Context()
	holder, gaveUp, next := driver.NewOwner(), driver.NewOwner(), driver.NewOwner()
	if _, err := a.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: holder}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		l *locker
		o driver.Owner
	}{{b, gaveUp}, {c, next}} {
		if _, err := w.l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: w.o, Wait: true}); !errors.Is(err, driver.ErrLocked) {
			t.Fatalf("waiting attempt on a held key: %v; want ErrLocked", err)
		}
	}
	wake := make(chan struct{}, 1)
	stop, err := c.Watch(key, next, wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := a.Release(ctx, key, holder); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the key kept for the first waiter", func() bool { return waitingIn(t, db, ns, key) == 1 })
	start := time.Now()
	if err := b.Release(ctx, key, gaveUp); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release by a waiter whose key is kept: %v; want ErrNotHeld", err)
	}
	select {
	case <-wake:
	case <-time.After(driver.QueueHold / 2):
		t.Fatalf("the next waiter not woken within %v of the first one giving up", driver.QueueHold/2)
	}
	if _, err := c.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: next, Wait: true}); err != nil {
		t.Fatalf("the next waiter's attempt after its wake-up: %v", err)
	}
	t.Logf("the next waiter served %v after the first gave up", time.Since(start).Round(time.Millisecond))
	if err := c.Release(ctx, key, next); err != nil {
		t.Fatal(err)
	}
}

// Close ends the client's waits in the server at once, on connections it
// dialed (their sockets closed) and on the application's (cancelled), and
// their Locks return.
func TestQueueCloseEndsWaits(t *testing.T) {
	dsn, db := adminDB(t)
	for _, kind := range []string{"dsn", "db"} {
		t.Run(kind, func(t *testing.T) {
			ns := namespace(t)
			holder, _ := testClient(t, dsn, ns)
			lease, err := holder.NewMutex("k").TryLock(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer lease.Unlock(t.Context())
			conn := driver.Connector(FromDB(db, WithNamespace(ns)))
			if kind == "dsn" {
				conn, err = NewConnector(dsn, WithNamespace(ns))
				if err != nil {
					t.Fatal(err)
				}
			}
			w, _ := wrapClient(t, conn)
			got := lockAsync(t.Context(), w.NewMutex("k"))
			waitFor(t, "the waiter in the server's queue", func() bool { return waitingIn(t, db, ns, "k") == 1 })
			start := time.Now()
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case l := <-got:
				if l != nil {
					t.Fatal("a Lock of a closed client returned a lease")
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the Lock did not return within 30s of Close")
			}
			waitFor(t, "the wait gone from the server", func() bool { return waitingIn(t, db, ns, "k") == 0 })
			t.Logf("the wait left the server %v after Close", time.Since(start).Round(time.Millisecond))
		})
	}
}

// A Lock waiting in the server keeps new readers out: TryLockTxShared
// fails while it waits behind a reader, so readers cannot starve it.
func TestQueueWaitingLockBlocksNewReaders(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	reader, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Rollback()
	if err := LockTxShared(t.Context(), reader, ns, "k"); err != nil {
		t.Fatal(err)
	}
	w, _ := testClient(t, dsn, ns)
	got := lockAsync(t.Context(), w.NewMutex("k"))
	waitFor(t, "the Lock in the server's queue", func() bool { return waitingIn(t, db, ns, "k") == 1 })
	late, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback()
	if ok, err := TryLockTxShared(t.Context(), late, ns, "k"); err != nil || ok {
		t.Fatalf("TryLockTxShared while a Lock waits behind a reader: %v, %v; want false", ok, err)
	}
	if err := reader.Commit(); err != nil {
		t.Fatal(err)
	}
	served(t, got, "the waiting Lock").Unlock(t.Context())
}

// withServerWait shortens the lock_timeout of waits in the server.
func withServerWait(d time.Duration) Option { return func(c *config) { c.serverWait = d } }

// A wait that lock_timeout ends on the server is asked again while its
// owner asks: the Lock stays in the server's queue and is served at the
// release.
func TestQueueLockTimeoutAsksAgain(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	const key = "k"
	holder, _ := testClient(t, dsn, ns)
	lease, err := holder.NewMutex(key).TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w, _ := testClient(t, dsn, ns, withServerWait(300*time.Millisecond))
	got := lockAsync(t.Context(), w.NewMutex(key))
	waitFor(t, "the waiter in the server's queue", func() bool { return waitingIn(t, db, ns, key) == 1 })
	var timeouts int
	var since time.Time
	db.QueryRow(`SELECT backend_start FROM pg_stat_activity WHERE pid = $1`, waiterPID(t, db, ns, key)).Scan(&since)
	time.Sleep(time.Second) // three of its lock_timeouts
	db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE backend_start = $1`, since).Scan(&timeouts)
	if n := waitingIn(t, db, ns, key); n != 1 || timeouts != 1 {
		t.Fatalf("after three lock_timeouts: %d requests waiting, its waiter session alive: %d; want 1 and 1", n, timeouts)
	}
	select {
	case <-got:
		t.Fatal("the waiter was served while the holder held the key")
	default:
	}
	if err := lease.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	served(t, got, "the waiter").Unlock(t.Context())
}

// Beyond MaxWaiters waiter sessions in use (waiting, or holding the key
// they got), a client's Locks poll, and are served all the same: a client
// uses at most MaxSessions + MaxWaiters server connections.
func TestQueueBeyondMaxWaiters(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	holder, _ := testClient(t, dsn, ns)
	w, wl := testClient(t, dsn, ns)
	const n = MaxWaiters + 2
	var leases []*mutex.Lease
	for i := range n {
		l, err := holder.NewMutex(fmt.Sprint("k", i)).TryLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	var got []<-chan *mutex.Lease
	for i := range n {
		got = append(got, lockAsync(t.Context(), w.NewMutex(fmt.Sprint("k", i))))
	}
	waiting := func() int {
		var k int
		if err := db.QueryRow(`SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = $1`, wl.appName).Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	check := func(when string, want int) {
		t.Helper()
		if k, s := waiting(), sessionsOf(t, db, wl); k != want || s > MaxSessions+MaxWaiters {
			t.Fatalf("%s: %d waits in the server on %d server connections; want %d on at most %d", when, k, s, want, MaxSessions+MaxWaiters)
		}
	}
	waitFor(t, "MaxWaiters waits in the server", func() bool { return waiting() == MaxWaiters })
	time.Sleep(100 * time.Millisecond)
	check(fmt.Sprintf("%d Locks of held keys", n), MaxWaiters)
	for _, l := range leases {
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	var mine []*mutex.Lease
	for i, c := range got {
		mine = append(mine, served(t, c, fmt.Sprint("waiter ", i)))
	}
	// Its waiter sessions now hold what they got: one more Lock polls.
	x, err := holder.NewMutex("x").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	gotX := lockAsync(t.Context(), w.NewMutex("x"))
	time.Sleep(200 * time.Millisecond)
	check(fmt.Sprintf("holding %d keys, one more Lock", n), 0)
	for _, l := range mine {
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	served(t, gotX, "the Lock beyond MaxWaiters").Unlock(t.Context())
}

// Exclusion with the queue: 3 clients x 10 goroutines take one key in turn;
// a gauge of holders never passes 1 and a counter updated by read, yield,
// write loses nothing (run under -race). Closing the clients leaves no
// goroutine of theirs behind, and no server connection.
func TestQueueExclusion(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	before := runtime.NumGoroutine()
	var (
		counter  int
		holders  int
		maxHeld  int
		wg       sync.WaitGroup
		clients  []*mutex.Client
		lockers  []*locker
		failures = make(chan error, 30)
	)
	const perG = 5
	for range 3 {
		conn, err := NewConnector(dsn, WithNamespace(ns))
		if err != nil {
			t.Fatal(err)
		}
		c, l := wrapClient(t, conn)
		clients = append(clients, c)
		lockers = append(lockers, l)
		for range 10 {
			wg.Go(func() {
				m := c.NewMutex("counter")
				for range perG {
					l, err := m.Lock(t.Context())
					if err != nil {
						failures <- err
						return
					}
					holders++
					maxHeld = max(maxHeld, holders)
					v := counter
					runtime.Gosched()
					time.Sleep(time.Millisecond)
					counter = v + 1
					holders--
					if err := l.Unlock(t.Context()); err != nil {
						failures <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	if counter != 3*10*perG || maxHeld != 1 {
		t.Fatalf("counter %d (want %d), at most %d holders at once (want 1)", counter, 3*10*perG, maxHeld)
	}
	for _, c := range clients {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range lockers {
		waitFor(t, "the client's server connections closed", func() bool { return sessionsOf(t, db, l) == 0 })
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
