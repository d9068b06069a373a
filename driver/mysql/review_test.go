package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mysql"
	"github.com/mutexkit/mutexkit/mutex"
)

// connectLocker opens a driver-level Locker (no package mutex) in a
// namespace of the test's own.
func connectLocker(t *testing.T, dsn, ns string, opts ...mysql.Option) driver.Locker {
	t.Helper()
	c, err := mysql.NewConnector(dsn, append([]mysql.Option{mysql.WithNamespace(ns)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// A heartbeat (Renew of {keep, tmp}) racing the release of tmp on the same
// session must not end the session: keep stays held. The check once picked
// the key to ask IS_USED_LOCK about before it had the session's slot, so a
// release in between made the check see its own key free and give the
// session up, losing keep.
func TestRenewRacingReleaseKeepsSession(t *testing.T) {
	dsn, admin := testDSN(t)
	ns := uniqueNamespace(t)
	l := connectLocker(t, dsn, ns)
	ctx := t.Context()
	keep := driver.Owner{1}
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "keep", Owner: keep}); err != nil {
		t.Fatal(err)
	}
	conn := holderOf(t, admin, mysql.LockName(ns, "keep"))
	for i := range 200 {
		tmp := driver.Owner{2, byte(i), byte(i >> 8)}
		if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "tmp", Owner: tmp}); err != nil {
			t.Fatalf("round %d: Acquire(tmp): %v", i, err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			l.Renew(ctx, []driver.Renewal{{Key: "keep", Owner: keep}, {Key: "tmp", Owner: tmp}})
		})
		wg.Go(func() {
			if err := l.Release(ctx, "tmp", tmp); err != nil {
				t.Errorf("round %d: Release(tmp): %v", i, err)
			}
		})
		wg.Wait()
		b := []driver.Renewal{{Key: "keep", Owner: keep}}
		l.Renew(ctx, b)
		if b[0].Err != nil {
			t.Fatalf("round %d: keep after a heartbeat raced the release of tmp: %v", i, b[0].Err)
		}
	}
	if got := holderOf(t, admin, mysql.LockName(ns, "keep")); got != conn {
		t.Fatalf("keep held by connection %d, was %d", got, conn)
	}
	if err := l.Release(ctx, "keep", keep); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// A charset list in the URL form reaches go-sql-driver as written: it
// tries each in turn. Its comma was once escaped on the way (%2C), and the
// server was asked for a charset named "nosuch%2Cutf8mb4".
func TestURLCharsetList(t *testing.T) {
	dsn, _ := testDSN(t)
	conn, err := mysql.NewConnector(dsn + "?charset=nosuch,utf8mb4")
	if err != nil {
		t.Fatal(err)
	}
	l, err := conn.Connect(t.Context())
	if err != nil {
		t.Fatalf("Connect with charset=nosuch,utf8mb4: %v", err)
	}
	l.Close()
}

// serverWaiters are the connections waiting in this driver's GET_LOCK
// (the process list shows a prepared statement's text, not its lock name).
func serverWaiters(t *testing.T, admin *sql.DB) map[int64]bool {
	t.Helper()
	rows, err := admin.Query(`SELECT ID FROM information_schema.PROCESSLIST WHERE STATE IN ('User lock', 'Waiting for user lock') AND INFO LIKE 'SELECT GET_LOCK(?, ?)%'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ids := make(map[int64]bool)
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	return ids
}

// With go-sql-driver's readTimeout shorter than a wait in the server, the
// wait stays on its session (its GET_LOCK times out on the server first):
// a read deadline that ended GET_LOCK closed the session, and the waiter
// lost its place. A readTimeout with no room for a wait is refused.
func TestWaitWithinReadTimeout(t *testing.T) {
	dsn, admin := testDSN(t)
	if _, err := mysql.NewConnector(dsn + "?readTimeout=1s"); !errors.Is(err, driver.ErrInvalid) {
		t.Fatalf("readTimeout=1s with waits in the server: %v; want ErrInvalid", err)
	}
	if _, err := mysql.NewConnector(dsn+"?readTimeout=1s", mysql.WithServerWait(false)); err != nil {
		t.Fatalf("readTimeout=1s, polling: %v", err)
	}
	ns := uniqueNamespace(t)
	a := openClient(t, dsn, ns)
	b := openClient(t, dsn+"?readTimeout=3s", ns)
	held, err := a.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	before := serverWaiters(t, admin)
	got := make(chan error, 1)
	go func() {
		l, err := b.NewMutex("k").Lock(t.Context())
		if err == nil {
			err = l.Unlock(t.Context())
		}
		got <- err
	}()
	var first int64
	for deadline := time.Now().Add(5 * time.Second); first == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the waiter never waited in the server")
		}
		for id := range serverWaiters(t, admin) {
			if !before[id] {
				first = id
			}
		}
	}
	time.Sleep(3500 * time.Millisecond) // past readTimeout, between two of the waiter's GET_LOCKs (2s each)
	still := false
	for range 5 { // GET_LOCK is asked again every 2s: a sample may fall between two
		still = still || serverWaiters(t, admin)[first]
		time.Sleep(50 * time.Millisecond)
	}
	if !still {
		t.Fatalf("the waiter's connection %d no longer waits after readTimeout passed", first)
	}
	held.Unlock(t.Context())
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// Inspect's queries never run on a lock session: a reply later than the
// reply deadline (here the fencing table locked by another connection)
// would close the session, freeing the locks on it unreported.
func TestSlowInspectKeepsLocks(t *testing.T) {
	dsn, admin := testDSN(t)
	ns := uniqueNamespace(t)
	a := openClient(t, dsn, ns, mysql.WithStatementTimeout(time.Second))
	b := openClient(t, dsn, ns)
	other, err := b.NewMutex("other", mutex.WithFencing()).TryLock(t.Context()) // the table exists
	if err != nil {
		t.Fatal(err)
	}
	defer other.Unlock(t.Context())
	keep, err := a.NewMutex("keep").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	conn := holderOf(t, admin, mysql.LockName(ns, "keep"))
	locker, err := admin.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	if _, err := locker.ExecContext(t.Context(), `LOCK TABLES `+mysql.FencingTable+` WRITE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	_, _, err = a.Inspect(ctx, "other") // its table read waits for the table lock
	cancel()
	locker.ExecContext(t.Context(), `UNLOCK TABLES`)
	if err == nil {
		t.Fatal("Inspect answered through a locked table")
	}
	time.Sleep(3 * clientHeartbeat)
	if keep.Err() != nil {
		t.Fatalf("a lease of the inspecting client: %v", keep.Err())
	}
	if got := holderOf(t, admin, mysql.LockName(ns, "keep")); got != conn {
		t.Fatalf("keep held by connection %d, was %d", got, conn)
	}
	keep.Unlock(t.Context())
}

// A setting of the DSN that the server refuses as the connection opens (an
// unknown parameter, which go-sql-driver sends as SET; a bad value; an
// unknown charset) is a bad DSN, which no retry cures: ErrInvalid, not
// ErrUnavailable.
func TestConnectRefusedSettingInvalid(t *testing.T) {
	dsn, _ := testDSN(t)
	for _, q := range []string{"nosuch_variable=1", "sql_mode=nosuch", "wait_timeout=%27x%27", "charset=nosuch"} {
		conn, err := mysql.NewConnector(dsn + "?" + q)
		if err != nil {
			t.Fatalf("%s: NewConnector: %v", q, err)
		}
		_, err = conn.Connect(t.Context())
		if !errors.Is(err, driver.ErrInvalid) || errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("%s: Connect: %v; want ErrInvalid", q, err)
		}
	}
}

// One lock name per (namespace, key): the option that left the key's
// prefix out of names (WithHashedNames, mutexkit_hashed_names) is gone, as
// two clients differing on it took the same key at once. Its parameter is
// now refused.
func TestHashedNamesGone(t *testing.T) {
	dsn, _ := testDSN(t)
	if _, err := mysql.NewConnector(dsn + "?mutexkit_hashed_names=1"); !errors.Is(err, driver.ErrInvalid) {
		t.Fatalf("mutexkit_hashed_names=1: %v; want ErrInvalid", err)
	}
}

// A grant obtained by waiting in the server lives on a waiter session,
// whose wait_timeout is short (a cut-off waiter stalls the queue for that
// long): once the key has stayed there a while, the session gets the
// holder's wait_timeout, so that a grant held with no statement for longer
// than the short one (a slow heartbeat; here none at all) is kept.
func TestWaitedGrantOutlivesWaiterIdle(t *testing.T) {
	dsn, admin := testDSN(t)
	ns := uniqueNamespace(t)
	l, other := connectLocker(t, dsn, ns), connectLocker(t, dsn, ns)
	ctx := t.Context()
	if _, err := other.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.Owner{9}}); err != nil {
		t.Fatal(err)
	}
	me := driver.Owner{1}
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: me, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt: %v", err)
	}
	if err := other.Release(ctx, "k", driver.Owner{9}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: me, Wait: true})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kept key never became the grant: %v", err)
		}
	}
	conn := holderOf(t, admin, mysql.LockName(ns, "k"))
	time.Sleep(driver.QueueHold + 5*time.Second) // past the waiter session's wait_timeout
	if got := holderOf(t, admin, mysql.LockName(ns, "k")); got != conn || got == 0 {
		t.Fatalf("the waited-for grant was on connection %d, now %d", conn, got)
	}
	if err := l.Release(ctx, "k", me); err != nil {
		t.Fatal(err)
	}
}
