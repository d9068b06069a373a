package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// The traps every client must avoid run in package pgsuite, shared with
// the pgx module (suite_test.go runs them here). These reach into the
// driver's sessions behind its back, or check the socket it dialled
// itself: they are lib/pq's alone.

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
	t.Run("option", func(t *testing.T) {
		_, l := testClient(t, dsn, namespace(t), WithKeepalive(7*time.Second, 2*time.Second, 4))
		checkKeepalive(t, l)
	})
	// The same through the DSN (pgsuite's network cut sets it by option).
	t.Run("dsn", func(t *testing.T) {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Skip("needs a URL DSN")
		}
		q := u.Query()
		q.Set("mutexkit_keepalive_idle", "7")
		q.Set("mutexkit_keepalive_interval", "2")
		q.Set("mutexkit_keepalive_count", "4")
		u.RawQuery = q.Encode()
		_, l := testClient(t, u.String(), namespace(t))
		checkKeepalive(t, l)
	})
}

// checkKeepalive checks a keepalive of 7 s idle, 2 s interval and 4
// probes on both sides of l's first session.
func checkKeepalive(t *testing.T, l *locker) {
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
