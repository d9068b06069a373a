package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// testClient opens a client in a namespace of the test's own and returns
// it with its Locker, caught by a middleware.
func testClient(t *testing.T, dsn, ns string, opts ...Option) (*mutex.Client, *locker) {
	t.Helper()
	conn, err := NewConnector(dsn, append([]Option{WithNamespace(ns)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return wrapClient(t, conn)
}

// testHeartbeat is how often the tests' clients verify their leases.
const testHeartbeat = 100 * time.Millisecond

// wrapClient makes a client of conn with opts (after a heartbeat of
// testHeartbeat) and returns it with its Locker, caught by a middleware.
func wrapClient(t *testing.T, conn driver.Connector, opts ...mutex.Option) (*mutex.Client, *locker) {
	t.Helper()
	var l *locker
	c := mutex.NewClient(conn, append([]mutex.Option{mutex.WithHeartbeat(testHeartbeat), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { l = next.(*locker); return next },
	})}, opts...)...)
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c, l
}

func namespace(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	return t.Name() + "/" + hex.EncodeToString(b[:])
}

func adminDB(t testing.TB) (string, *sql.DB) {
	t.Helper()
	dsn := testserver.PostgresDSN(t)
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return dsn, db
}

// waitFor polls cond until it holds or a generous bound passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sessionsOf counts the server connections of the locker's client.
func sessionsOf(t *testing.T, db *sql.DB, l *locker) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, l.appName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// holderPID returns the backend pid holding key in namespace, or 0.
func holderPID(t *testing.T, db *sql.DB, ns, key string) int {
	t.Helper()
	classid, objid := LockTag(KeyID(ns, key))
	var pid int
	err := db.QueryRow(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted
		AND classid = $1 AND objid = $2`, int64(classid), int64(objid)).Scan(&pid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// Trap: PostgreSQL grants a key again to the session holding it, and
// stacks it. A second owner of one client must get ErrLocked, however the
// attempts interleave, and one release must free the key.
func TestNoRegrantToSameSession(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	conn, _ := NewConnector(dsn, WithNamespace(ns))
	l, err := conn.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := t.Context()
	const n = 20
	var wins atomic.Int32
	owners := make([]driver.Owner, n)
	var wg sync.WaitGroup
	for i := range n {
		owners[i] = driver.NewOwner()
		wg.Go(func() {
			_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: owners[i]})
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, driver.ErrLocked):
				t.Errorf("Acquire: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d owners of one client got the key; want 1", wins.Load())
	}
	var count int
	classid, objid := LockTag(KeyID(ns, "k"))
	db.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2`, int64(classid), int64(objid)).Scan(&count)
	if count != 1 {
		t.Fatalf("%d pg_locks rows for the key; want 1", count)
	}
	for _, o := range owners {
		if err := l.Release(ctx, "k", o); err == nil {
			break
		}
	}
	if pid := holderPID(t, db, ns, "k"); pid != 0 {
		t.Fatalf("key still held by backend %d after its one release: the lock was stacked", pid)
	}
}

// holdOnSession takes "k" on a new client and borrows the lock session that
// holds it (its slot taken, so the test may run statements on it behind
// the driver's back; give it back with s.give()).
func holdOnSession(t *testing.T, dsn string) (*mutex.Client, *locker, *mutex.Lease, *session) {
	t.Helper()
	c, l := testClient(t, dsn, namespace(t))
	lease, err := c.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	s := l.held["k"].s
	l.mu.Unlock()
	s.sem <- struct{}{}
	return c, l, lease, s
}

// Trap: pg_advisory_unlock returning false is an error, never ignored.
func TestUnlockFalseIsNotHeld(t *testing.T) {
	dsn, _ := adminDB(t)
	_, l, lease, s := holdOnSession(t, dsn)
	// Behind the driver's back, the session gives the lock up.
	var ok bool
	if err := s.conn.QueryRowContext(background, `SELECT pg_advisory_unlock($1)`, KeyID(l.cfg.namespace, "k")).Scan(&ok); err != nil || !ok {
		t.Fatal(ok, err)
	}
	s.give()
	err := lease.Unlock(t.Context())
	if !errors.Is(err, mutex.ErrNotHeld) || !errors.Is(err, mutex.ErrLockLost) {
		t.Fatalf("Unlock after the session lost the lock: %v; want ErrNotHeld and ErrLockLost", err)
	}
}

// blockFencedAcquire makes the next fenced acquisition of key wait on the
// server: an open transaction locks its fencing row. It returns once the
// row exists and is locked; the transaction ends with the test.
func blockFencedAcquire(t *testing.T, db *sql.DB, c *mutex.Client, ns, key string) *sql.Tx {
	t.Helper()
	l, err := c.NewMutex(key, mutex.WithFencing()).TryLock(t.Context()) // writes the row
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback() })
	if _, err := tx.Exec(`SELECT 1 FROM `+FencingTable+` WHERE key_id = $1 FOR UPDATE`, KeyID(ns, key)); err != nil {
		t.Fatal(err)
	}
	return tx
}

// waitingOnLock reports whether backend pid waits for a lock.
func waitingOnLock(t *testing.T, db *sql.DB, pid int) bool {
	var w sql.NullString
	if err := db.QueryRow(`SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&w); err != nil {
		t.Fatal(err)
	}
	return w.String == "Lock"
}

// Trap: a user's context must never cancel a statement on a session that
// holds other leases (lib/pq cancels by closing the connection, which
// drops every lock on it). A TryLock whose deadline passes while its
// statement waits on the server leaves the session, and the lease on it,
// alone.
func TestDeadlineNeverCancelsSession(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	c, l := testClient(t, dsn, ns)
	held, err := c.NewMutex("held").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pid := holderPID(t, db, ns, "held")
	tx := blockFencedAcquire(t, db, c, ns, "slow")

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.NewMutex("slow", mutex.WithFencing()).TryLock(ctx)
		done <- err
	}()
	waitFor(t, "the acquisition waits on the server", func() bool { return waitingOnLock(t, db, pid) })
	<-ctx.Done() // the deadline passes while the statement runs
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("TryLock: %v; want DeadlineExceeded", err)
	}
	if err := held.Err(); err != nil {
		t.Fatalf("the other lease on the session: %v", err)
	}
	if got := holderPID(t, db, ns, "held"); got != pid {
		t.Fatalf("held key on backend %d, was %d: the session was cancelled", got, pid)
	}
	l.mu.Lock()
	kept := slices.ContainsFunc(l.sessions, func(s *session) bool { return s.pid == pid })
	l.mu.Unlock()
	if !kept { // others may have been opened beside it: to vouch for it while it waited
		t.Fatalf("the session it began with (backend %d) was given up", pid)
	}
	if err := held.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// Trap: statements are bounded on the server instead (lock_timeout,
// statement_timeout): one that waits too long fails, and the session and
// its other leases survive.
func TestServerSideTimeoutBoundsStatements(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	c, _ := testClient(t, dsn, ns, WithStatementTimeout(300*time.Millisecond))
	held, err := c.NewMutex("held").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pid := holderPID(t, db, ns, "held")
	blockFencedAcquire(t, db, c, ns, "slow")
	_, err = c.NewMutex("slow", mutex.WithFencing()).TryLock(t.Context())
	if err == nil || errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock blocked on the server: %v; want a timeout error", err)
	}
	t.Logf("TryLock: %v", err)
	if err := held.Err(); err != nil {
		t.Fatalf("the other lease: %v", err)
	}
	if got := holderPID(t, db, ns, "held"); got != pid {
		t.Fatalf("held key on backend %d, was %d", got, pid)
	}
	if got := holderPID(t, db, ns, "slow"); got != 0 {
		t.Fatalf("the failed attempt left \"slow\" held by %d", got)
	}
}

// Trap: a session killed on the server is found by package mutex's
// verification (Renew, every heartbeat), and every lease on it is reported
// lost; the client goes on with a new one.
func TestKilledSessionLosesEveryLease(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	c, _ := testClient(t, dsn, ns)
	var leases []*mutex.Lease
	for i := range 3 {
		l, err := c.NewMutex(fmt.Sprint("k", i)).TryLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	pid := holderPID(t, db, ns, "k0")
	if _, err := db.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		select {
		case <-l.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: loss not reported", l.Key())
		}
		if !errors.Is(l.Err(), mutex.ErrLockLost) {
			t.Fatalf("%s: Err = %v", l.Key(), l.Err())
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	l, err := c.NewMutex("k0").Lock(ctx) // the dying backend frees its locks as it exits
	if err != nil {
		t.Fatalf("Lock after the loss: %v", err)
	}
	if got := holderPID(t, db, ns, "k0"); got == pid || got == 0 {
		t.Fatalf("k0 held by backend %d after the kill of %d", got, pid)
	}
	l.Unlock(t.Context())
}

// Trap: a session that may hold locks never goes back to a pool. With the
// application's *sql.DB, sessions are discarded when the client closes,
// and the pool never hands them out again.
func TestDBConnectorDiscardsSessions(t *testing.T) {
	_, db := adminDB(t)
	ns := namespace(t)
	c, _ := wrapClient(t, FromDB(db, WithNamespace(ns)))
	lease, err := c.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pid := holderPID(t, db, ns, "k")

	// A wait in the server takes its waiter session from db too.
	other, _ := wrapClient(t, FromDB(db, WithNamespace(ns)))
	got := make(chan error, 1)
	go func() {
		l, err := other.NewMutex("k").Lock(t.Context())
		if err == nil {
			l.Unlock(t.Context())
		}
		got <- err
	}()
	if err := lease.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewMutex("k").TryLock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Every pooled connection is a different backend.
	var conns []*sql.Conn
	for range db.Stats().Idle + 2 {
		conn, err := db.Conn(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		var got int
		if err := conn.QueryRowContext(t.Context(), `SELECT pg_backend_pid()`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got == pid {
			t.Fatalf("the pool handed out the lock session (backend %d)", pid)
		}
	}
	for _, conn := range conns {
		conn.Close()
	}
	if got := holderPID(t, db, ns, "k"); got != 0 {
		t.Fatalf("key held by %d after Close", got)
	}
}

// Trap: a deferred Unlock with a cancelled context must neither fail half
// way nor cancel the session that holds the client's other leases. It
// honours its context (an error matching context.Canceled, at once), and
// the release goes on in the background and frees the key.
func TestCancelledUnlockReleases(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	c, l := testClient(t, dsn, ns)
	a, err := c.NewMutex("a").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.NewMutex("b").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pid := holderPID(t, db, ns, "a")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.Unlock(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Unlock with a cancelled context: %v; want nil or an error matching context.Canceled", err)
	}
	waitFor(t, "b freed by the release in the background", func() bool {
		l.mu.Lock()
		_, tracked := l.held["b"]
		l.mu.Unlock()
		return !tracked && holderPID(t, db, ns, "b") == 0
	})
	if _, err := c.NewMutex("b").TryLock(t.Context()); err != nil {
		t.Fatalf("TryLock b after its release: %v", err)
	}
	if got := holderPID(t, db, ns, "a"); got != pid || a.Err() != nil {
		t.Fatalf("a on backend %d (was %d), Err %v", got, pid, a.Err())
	}
}

// Trap: a transaction-pooling proxy sends one session's statements to
// different backends. Simulated by changing what the session expects (no
// pgbouncer here): the next statement notices, the client refuses, and
// the leases on it are reported lost.
func TestTransactionPoolingRefused(t *testing.T) {
	dsn, _ := adminDB(t)
	_, _, lease, s := holdOnSession(t, dsn)
	s.pid++ // as if the proxy had switched backends
	s.give()
	select {
	case <-lease.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("loss not reported")
	}
	if err := lease.Err(); !errors.Is(err, ErrTransactionPooling) {
		t.Fatalf("Err = %v; want ErrTransactionPooling", err)
	}
}

// Trap: a cut-off client's locks must be freed on a bound we set: TCP
// keepalive on the server side of each session, and on our socket.
func TestKeepaliveSet(t *testing.T) {
	dsn, _ := adminDB(t)
	_, l := testClient(t, dsn, namespace(t), WithKeepalive(7*time.Second, 2*time.Second, 4))
	l.mu.Lock()
	s := l.sessions[0]
	l.mu.Unlock()
	s.sem <- struct{}{}
	defer s.give()
	var idle, intvl, count, user string
	if err := s.conn.QueryRowContext(background, `SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'),
		current_setting('tcp_keepalives_count'), current_setting('tcp_user_timeout')`).Scan(&idle, &intvl, &count, &user); err != nil {
		t.Fatal(err)
	}
	if s.netConn == nil || s.netConn.RemoteAddr().Network() != "tcp" {
		t.Skipf("not a TCP connection (server side reads %s/%s/%s)", idle, intvl, count)
	}
	if idle != "7" || intvl != "2" || count != "4" || user != "15000" {
		t.Fatalf("server side: idle %s, interval %s, count %s, user timeout %s; want 7, 2, 4, 15000", idle, intvl, count, user)
	}
	raw, err := s.netConn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got [4]int
	raw.Control(func(fd uintptr) {
		got[0], _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		got[1], _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		got[2], _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL)
		got[3], _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT)
	})
	if got != [4]int{1, 7, 2, 4} {
		t.Fatalf("client socket keepalive (on, idle, interval, count) = %v; want [1 7 2 4]", got)
	}
}

// Scale: 2,000 held keys share at most MaxSessions connections, and
// waiters of one key add one (its wait in the server: the client's Locks
// of one key queue in the client, one at a time in the server).
func TestTwoThousandKeysFewSessions(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	open := func() (*mutex.Client, *locker) {
		conn, err := NewConnector(dsn, WithNamespace(ns))
		if err != nil {
			t.Fatal(err)
		}
		// The default heartbeat: under -race, a TryLock here may wait for
		// a session longer than two and a half test heartbeats, and
		// package mutex counts a session lease's first verification from
		// the attempt's start.
		return wrapClient(t, conn, mutex.WithHeartbeat(mutex.DefaultHeartbeat))
	}
	c, l := open()
	other, _ := open()
	const n, workers = 2000, 16
	var wg sync.WaitGroup
	leases := make([]*mutex.Lease, n)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				l, err := c.NewMutex(fmt.Sprint("many/", i)).TryLock(t.Context())
				if err != nil {
					t.Errorf("TryLock %d: %v", i, err)
					return
				}
				leases[i] = l
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Waiters of this client on keys another client holds.
	blocker, err := other.NewMutex("blocked").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var waiters sync.WaitGroup
	for range 10 {
		waiters.Go(func() {
			for {
				l, err := c.NewMutex("blocked").Lock(ctx)
				if err != nil {
					return
				}
				l.Unlock(context.Background())
			}
		})
	}
	waitFor(t, "a wait in the server", func() bool { return waitingIn(t, db, ns, "blocked") == 1 })
	got := sessionsOf(t, db, l)
	cancel()
	waiters.Wait()
	blocker.Unlock(t.Context())
	if got > MaxSessions+1 {
		t.Fatalf("%d server connections for %d held keys and 10 waiters; want at most %d", got, n, MaxSessions+1)
	}
	t.Logf("%d keys held and 10 waiters on %d server connections", n, got)
	for _, i := range []int{0, 999, 1999} {
		if _, err := other.NewMutex(fmt.Sprint("many/", i)).TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("many/%d from another client: %v; want ErrLocked", i, err)
		}
	}
	for _, l := range leases {
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// The per-client cap gives a clear error before the server's lock table
// fills.
func TestMaxKeys(t *testing.T) {
	dsn, _ := adminDB(t)
	c, _ := testClient(t, dsn, namespace(t), WithMaxKeys(3))
	var leases []*mutex.Lease
	for i := range 3 {
		l, err := c.NewMutex(fmt.Sprint("k", i)).TryLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	_, err := c.NewMutex("k3").TryLock(t.Context())
	if !errors.Is(err, ErrTooManyKeys) {
		t.Fatalf("fourth key: %v; want ErrTooManyKeys", err)
	}
	t.Logf("fourth key: %v", err)
	leases[0].Unlock(t.Context())
	if _, err := c.NewMutex("k3").TryLock(t.Context()); err != nil {
		t.Fatalf("after a release: %v", err)
	}
}
