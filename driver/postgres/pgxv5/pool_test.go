package pgxv5_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/internal/pgsuite"
	"github.com/mutexkit/mutexkit/driver/postgres/pgxv5"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// holdWithSQL takes key with plain SQL on a connection of admin's own,
// released (by closing the connection) when t ends or on release().
func holdWithSQL(t *testing.T, admin *sql.DB, ns, key string) (release func()) {
	t.Helper()
	conn, err := admin.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), `SELECT pg_advisory_lock($1)`, postgres.KeyID(ns, key)); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, postgres.KeyID(ns, key))
			conn.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// waiters returns the backend pids waiting in the server's queue for key.
func waiters(t testing.TB, admin *sql.DB, ns, key string) []int {
	t.Helper()
	classid, objid := postgres.LockTag(postgres.KeyID(ns, key))
	rows, err := admin.Query(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
		AND NOT granted AND classid = $1 AND objid = $2`, int64(classid), int64(objid))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var pids []int
	for rows.Next() {
		var pid int
		rows.Scan(&pid)
		pids = append(pids, pid)
	}
	return pids
}

// A Lock cancelled while it waits in the server's queue ends its wait
// alone: pgx never sees the caller's context on a session statement (it
// would close the connection, or send a cancel request, when that context
// ends), so the keys the client holds on its lock sessions stay held by
// the same backends, as pg_locks shows to a separate connection.
func TestCancelledWaitKeepsOtherKeys(t *testing.T) {
	dsn := testserver.PostgresDSN(t)
	admin := pgsuite.OpenDB(t, dsn)
	ns := pgsuite.Namespace(t)
	mc := openClient(t, newPool(t, dsn, 8), ns)
	var leases []*mutex.Lease
	pids := map[string]int{}
	for _, k := range []string{"a", "b"} {
		l, err := mc.NewMutex(k).TryLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
		pids[k] = pgsuite.HolderPID(t, admin, ns, k)
	}
	release := holdWithSQL(t, admin, ns, "w")

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		l, err := mc.NewMutex("w").Lock(ctx)
		if err == nil {
			l.Unlock(context.Background())
		}
		done <- err
	}()
	pgsuite.WaitFor(t, "the Lock waits in the server's queue", func() bool { return len(waiters(t, admin, ns, "w")) == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock: %v; want context.Canceled", err)
	}
	pgsuite.WaitFor(t, "the wait leaves the server's queue", func() bool { return len(waiters(t, admin, ns, "w")) == 0 })
	for i, k := range []string{"a", "b"} {
		if err := leases[i].Err(); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if got := pgsuite.HolderPID(t, admin, ns, k); got != pids[k] {
			t.Fatalf("%s held by backend %d after the cancel; was %d", k, got, pids[k])
		}
	}
	release()
	l, err := mc.NewMutex("w").TryLock(t.Context())
	if err != nil {
		t.Fatalf("TryLock after the holder left: %v", err)
	}
	l.Unlock(t.Context())
	for _, l := range leases {
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// A connection that was a lock session (or a waiter session) never goes
// back to the pool: after Close, no connection of the pool holds an
// advisory lock or carries this driver's session settings, and none is a
// backend that was a session.
func TestCloseDiscardsSessions(t *testing.T) {
	dsn := testserver.PostgresDSN(t)
	admin := pgsuite.OpenDB(t, dsn)
	ns := pgsuite.Namespace(t)
	const maxConns = 8
	pool := newPool(t, dsn, maxConns)
	mc := openClient(t, pool, ns)

	// Several lock sessions: keys taken at once.
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if _, err := mc.NewMutex(fmt.Sprint("k", i)).TryLock(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// And a waiter session: a Lock waiting in the server's queue.
	holdWithSQL(t, admin, ns, "w")
	go mc.NewMutex("w").Lock(t.Context())
	pgsuite.WaitFor(t, "the Lock waits in the server's queue", func() bool { return len(waiters(t, admin, ns, "w")) == 1 })

	sessions := waiters(t, admin, ns, "w")
	for i := range 16 {
		sessions = append(sessions, pgsuite.HolderPID(t, admin, ns, fmt.Sprint("k", i)))
	}
	slices.Sort(sessions)
	sessions = slices.Compact(sessions)
	t.Logf("sessions: backends %v; pool: %d connections, %d acquired", sessions, pool.Stat().TotalConns(), pool.Stat().AcquiredConns())

	if err := mc.Close(); err != nil {
		t.Fatal(err)
	}
	// pgxpool destroys a closed connection in a goroutine of its own
	// (puddle's Destroy), so its count goes down just after Close.
	pgsuite.WaitFor(t, "no pool connection acquired after Close", func() bool { return pool.Stat().AcquiredConns() == 0 })
	// Every connection the pool can give, at once.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var conns []*pgxpool.Conn
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range maxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		var pid, locks int
		var mark, app string
		err := c.QueryRow(ctx, `SELECT pg_backend_pid(), (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'),
			coalesce(current_setting('mutexkit.session', true), ''), current_setting('application_name')`).Scan(&pid, &locks, &mark, &app)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(sessions, pid) || locks != 0 || mark != "" || strings.Contains(app, "mutexkit") {
			t.Errorf("pool connection on backend %d: %d advisory locks, mutexkit.session %q, application_name %q; sessions were %v",
				pid, locks, mark, app, sessions)
		}
	}
	// The sessions' backends are gone, and with them their locks.
	pgsuite.WaitFor(t, "the sessions' backends end", func() bool {
		var n int
		if err := admin.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = ANY($1::int[])`,
			pgArray(sessions)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
}

// pgArray writes ints as a PostgreSQL array literal.
func pgArray(ints []int) string {
	s := make([]string, len(ints))
	for i, n := range ints {
		s[i] = strconv.Itoa(n)
	}
	return "{" + strings.Join(s, ",") + "}"
}

// Close leaves no goroutine of the driver's (nor of database/sql's) behind,
// and the application's pool open.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	dsn := testserver.PostgresDSN(t)
	admin := pgsuite.OpenDB(t, dsn)
	ns := pgsuite.Namespace(t)
	pool := newPool(t, dsn, 8)
	if err := pool.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	release := holdWithSQL(t, admin, ns, "w")
	time.Sleep(600 * time.Millisecond) // pgxpool's own health-check trigger after a destroy ends within 500 ms
	before := runtime.NumGoroutine()

	mc := mutex.NewClient(pgxv5.FromPool(pool, postgres.WithNamespace(ns)))
	l, err := mc.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { _, err := mc.NewMutex("w").Lock(ctx); done <- err }()
	pgsuite.WaitFor(t, "the Lock waits in the server's queue", func() bool { return len(waiters(t, admin, ns, "w")) == 1 })
	cancel()
	<-done
	l.Unlock(t.Context())
	if err := mc.Close(); err != nil {
		t.Fatal(err)
	}
	release()
	if err := pool.Ping(t.Context()); err != nil {
		t.Fatalf("the application's pool after Close: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A lib/pq client and a pgx client exclude each other on one key: each
// one's TryLock fails while the other holds it, and Locks of both,
// counted in a shared critical section under -race, never overlap.
func TestInteropWithLibPQ(t *testing.T) {
	dsn := testserver.PostgresDSN(t)
	ns := pgsuite.Namespace(t)
	pgx := openClient(t, newPool(t, dsn, 8), ns)
	conn, err := postgres.NewConnector(dsn, postgres.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	pq := mutex.NewClient(conn)
	t.Cleanup(func() { pq.Close() })

	for _, c := range []struct {
		name          string
		holder, rival *mutex.Client
	}{{"pgx holds", pgx, pq}, {"lib/pq holds", pq, pgx}} {
		l, err := c.holder.NewMutex("k").TryLock(t.Context())
		if err != nil {
			t.Fatalf("%s: TryLock: %v", c.name, err)
		}
		if _, err := c.rival.NewMutex("k").TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("%s: the other's TryLock: %v; want ErrLocked", c.name, err)
		}
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
	}

	var inside, entries atomic.Int64
	var wg sync.WaitGroup
	for i := range 6 {
		mc := []*mutex.Client{pgx, pq}[i%2]
		wg.Go(func() {
			for range 20 {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				l, err := mc.NewMutex("k").Lock(ctx)
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
				if n := inside.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				entries.Add(1)
				time.Sleep(time.Millisecond)
				inside.Add(-1)
				if err := l.Unlock(t.Context()); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if entries.Load() != 120 {
		t.Fatalf("%d entries; want 120", entries.Load())
	}
}

// The driver's server-side keepalive settings (postgres.WithKeepalive)
// apply to a pool's connections too: the server's socket of a lock session
// has its keepalive timer within the idle time set (7 s, where the
// server's default is hours). The kernel's view (/proc/net/tcp) is read,
// so the test runs where the server is on this machine's loopback.
func TestKeepaliveOnServerSide(t *testing.T) {
	dsn := testserver.PostgresDSN(t)
	u, err := url.Parse(dsn)
	if err != nil || u.Hostname() != "127.0.0.1" {
		t.Skipf("server not on 127.0.0.1 (%s)", u.Hostname())
	}
	serverPort, _ := strconv.Atoi(u.Port())
	if serverPort == 0 {
		serverPort = 5432
	}
	admin := pgsuite.OpenDB(t, dsn)
	ns := pgsuite.Namespace(t)
	mc := openClient(t, newPool(t, dsn, 4), ns, postgres.WithKeepalive(7*time.Second, 2*time.Second, 4))
	l, err := mc.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(t.Context())
	var clientPort int
	if err := admin.QueryRow(`SELECT client_port FROM pg_stat_activity WHERE pid = $1`, pgsuite.HolderPID(t, admin, ns, "k")).Scan(&clientPort); err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", serverPort)
	remote := fmt.Sprintf("0100007F:%04X", clientPort)
	var timer string
	pgsuite.WaitFor(t, "the keepalive timer of the server's socket", func() bool {
		f, err := os.Open("/proc/net/tcp")
		if err != nil {
			t.Skipf("no /proc/net/tcp: %v", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		found := false
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 6 || fs[1] != local || fs[2] != remote {
				continue
			}
			found = true
			timer = fs[5] // tr:tm->when, when in clock ticks (USER_HZ, 100 a second)
		}
		if !found {
			t.Skipf("the server's socket %s-%s is not in this network namespace", local, remote)
		}
		return strings.HasPrefix(timer, "02:") // 2: the keepalive timer
	})
	when, err := strconv.ParseInt(strings.TrimPrefix(timer, "02:"), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if when > 7*100 {
		t.Fatalf("the server's keepalive timer of the session fires in %d ticks (%s); want at most 700 (7 s)", when, timer)
	}
	t.Logf("server socket timer %s (%.2f s)", timer, float64(when)/100)
}

// A pool in the simple protocol (pgx.QueryExecModeSimpleProtocol, common
// behind poolers) locks as well: the driver's statements do not depend on
// the pool's exec mode. A fenced TryLock, a Lock that waits in the
// server's queue and is granted on the release, and the exclusion of a
// second client.
func TestSimpleProtocolPool(t *testing.T) {
	dsn := testserver.PostgresDSN(t)
	ns := pgsuite.Namespace(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	a, b := openClient(t, pool, ns), openClient(t, pool, ns)

	l, err := a.NewMutex("k", mutex.WithFencing()).TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if l.Token() == 0 {
		t.Fatal("no fencing token")
	}
	if _, err := b.NewMutex("k").TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("second client's TryLock: %v; want ErrLocked", err)
	}
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		l, err := b.NewMutex("k").Lock(ctx)
		if err == nil {
			err = l.Unlock(ctx)
		}
		got <- err
	}()
	admin := pgsuite.OpenDB(t, dsn)
	pgsuite.WaitFor(t, "the Lock waits in the server's queue", func() bool { return len(waiters(t, admin, ns, "k")) == 1 })
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiting Lock: %v", err)
	}
}
