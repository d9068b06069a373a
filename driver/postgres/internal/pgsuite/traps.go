package pgsuite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/mutex"
)

// NoRegrantToSameSession: PostgreSQL grants a key again to the session
// holding it, and stacks it. A second owner of one client must get
// ErrLocked, however the attempts interleave, and one release must free
// the key.
func NoRegrantToSameSession(t *testing.T, c Client) {
	dsn, db := adminDB(t)
	ns := Namespace(t)
	l, err := c.Connect(t, dsn, postgres.WithNamespace(ns)).Connect(t.Context())
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
	classid, objid := postgres.LockTag(postgres.KeyID(ns, "k"))
	db.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2`, int64(classid), int64(objid)).Scan(&count)
	if count != 1 {
		t.Fatalf("%d pg_locks rows for the key; want 1", count)
	}
	for _, o := range owners {
		if err := l.Release(ctx, "k", o); err == nil {
			break
		}
	}
	if pid := HolderPID(t, db, ns, "k"); pid != 0 {
		t.Fatalf("key still held by backend %d after its one release: the lock was stacked", pid)
	}
}

// BlockFencedAcquire makes the next fenced acquisition of key wait on the
// server: an open transaction locks its fencing row. It returns once the
// row exists and is locked; the transaction ends with the test.
func BlockFencedAcquire(t *testing.T, db *sql.DB, c *mutex.Client, ns, key string) *sql.Tx {
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
	if _, err := tx.Exec(`SELECT 1 FROM `+postgres.FencingTable+` WHERE key_id = $1 FOR UPDATE`, postgres.KeyID(ns, key)); err != nil {
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

// DeadlineNeverCancelsSession: a user's context must never cancel a
// statement on a session that holds other leases (lib/pq cancels by
// closing the connection, pgx by default by a deadline on its socket,
// which ends the connection too: either drops every lock on it). A TryLock
// whose deadline passes while its statement waits on the server leaves
// the session, and the lease on it, alone.
func DeadlineNeverCancelsSession(t *testing.T, c Client) {
	dsn, db := adminDB(t)
	ns := Namespace(t)
	// The default heartbeat: the session is busy with the blocked
	// statement for the deadline and more, and "held" is verified
	// meanwhile through a session opened beside it, which under -race on
	// a loaded machine could take longer than two and a half test
	// heartbeats (2 of 6 full runs here lost the lease so, one on lib/pq
	// and one on pgx).
	// That is TestVouchWithSlowConnect's subject; this one's is the
	// cancel, which would free "held" on the server at once.
	mc := open(t, c, dsn, ns, nil, mutex.WithHeartbeat(mutex.DefaultHeartbeat))
	held, err := mc.NewMutex("held").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pid := HolderPID(t, db, ns, "held")
	tx := BlockFencedAcquire(t, db, mc, ns, "slow")

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := mc.NewMutex("slow", mutex.WithFencing()).TryLock(ctx)
		done <- err
	}()
	WaitFor(t, "the acquisition waits on the server", func() bool { return waitingOnLock(t, db, pid) })
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
	if got := HolderPID(t, db, ns, "held"); got != pid {
		t.Fatalf("held key on backend %d, was %d: the session was cancelled", got, pid)
	}
	if err := held.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// ServerSideTimeoutBoundsStatements: statements are bounded on the server
// instead (lock_timeout, statement_timeout): one that waits too long
// fails with the server's error (a reply: driver.ErrUnavailable, carrying
// the client library's error), and the session and its other leases
// survive. A client whose server errors the driver did not read as
// replies would give the session, and "held", up.
func ServerSideTimeoutBoundsStatements(t *testing.T, c Client) {
	dsn, db := adminDB(t)
	ns := Namespace(t)
	mc := open(t, c, dsn, ns, []postgres.Option{postgres.WithStatementTimeout(300 * time.Millisecond)})
	held, err := mc.NewMutex("held").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pid := HolderPID(t, db, ns, "held")
	BlockFencedAcquire(t, db, mc, ns, "slow")
	_, err = mc.NewMutex("slow", mutex.WithFencing()).TryLock(t.Context())
	if code := c.SQLState(err); code != "55P03" && code != "57014" {
		t.Fatalf("TryLock blocked on the server: %v (SQLSTATE %q); want the server's lock or statement timeout (55P03, 57014)", err, code)
	}
	if !errors.Is(err, driver.ErrUnavailable) || errors.Is(err, mutex.ErrLocked) {
		t.Errorf("TryLock: %v; want driver.ErrUnavailable, not ErrLocked", err)
	}
	t.Logf("TryLock: %v", err)
	if err := held.Err(); err != nil {
		t.Fatalf("the other lease: %v", err)
	}
	if got := HolderPID(t, db, ns, "held"); got != pid {
		t.Fatalf("held key on backend %d, was %d", got, pid)
	}
	if got := HolderPID(t, db, ns, "slow"); got != 0 {
		t.Fatalf("the failed attempt left \"slow\" held by %d", got)
	}
	if err := held.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock on the session after the timeout: %v", err)
	}
}

// KilledSessionLosesEveryLease: a session killed on the server is found
// by package mutex's verification (Renew, every heartbeat), and every
// lease on it is reported lost; the client goes on with a new one.
func KilledSessionLosesEveryLease(t *testing.T, c Client) {
	dsn, db := adminDB(t)
	ns := Namespace(t)
	mc := open(t, c, dsn, ns, nil)
	var leases []*mutex.Lease
	for i := range 3 {
		l, err := mc.NewMutex(fmt.Sprint("k", i)).TryLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	pid := HolderPID(t, db, ns, "k0")
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
	l, err := mc.NewMutex("k0").Lock(ctx) // the dying backend frees its locks as it exits
	if err != nil {
		t.Fatalf("Lock after the loss: %v", err)
	}
	if got := HolderPID(t, db, ns, "k0"); got == pid || got == 0 {
		t.Fatalf("k0 held by backend %d after the kill of %d", got, pid)
	}
	l.Unlock(t.Context())
}

// PoolDiscardsSessions: a session that may hold locks never goes back to
// a pool. With the application's pool, sessions are discarded when the
// client closes, and the pool never hands them out again. It needs a
// Client on a pool (one whose Open gives a Borrow).
func PoolDiscardsSessions(t *testing.T, c Client) {
	dsn, db := adminDB(t)
	ns := Namespace(t)
	connect, borrow := c.Open(t, dsn)
	if borrow == nil {
		t.Fatalf("client %s has no pool to borrow from", c.Name)
	}
	mc := newClient(t, connect(postgres.WithNamespace(ns)))
	lease, err := mc.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pid := HolderPID(t, db, ns, "k")

	// A wait in the server takes its waiter session from the pool too.
	other := newClient(t, connect(postgres.WithNamespace(ns)))
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
	if _, err := mc.NewMutex("k").TryLock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := mc.Close(); err != nil {
		t.Fatal(err)
	}
	// Every pooled connection is a different backend.
	pids, err := borrow(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range pids {
		if got == pid {
			t.Fatalf("the pool handed out the lock session (backend %d)", pid)
		}
	}
	if got := HolderPID(t, db, ns, "k"); got != 0 {
		t.Fatalf("key held by %d after Close", got)
	}
}

// CancelledUnlockReleases: a deferred Unlock with a cancelled context
// must neither fail half way nor cancel the session that holds the
// client's other leases. It honours its context (an error matching
// context.Canceled, at once), and the release goes on in the background
// and frees the key.
func CancelledUnlockReleases(t *testing.T, c Client) {
	dsn, db := adminDB(t)
	ns := Namespace(t)
	mc := open(t, c, dsn, ns, nil)
	a, err := mc.NewMutex("a").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, err := mc.NewMutex("b").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pid := HolderPID(t, db, ns, "a")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.Unlock(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Unlock with a cancelled context: %v; want nil or an error matching context.Canceled", err)
	}
	WaitFor(t, "b freed on the server by the release in the background", func() bool { return HolderPID(t, db, ns, "b") == 0 })
	// The client may still be forgetting b (ErrLocked meanwhile); then
	// it takes it again.
	WaitFor(t, "TryLock b after its release", func() bool {
		l, err := mc.NewMutex("b").TryLock(t.Context())
		if err != nil && !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("TryLock b after its release: %v", err)
		}
		return l != nil
	})
	if got := HolderPID(t, db, ns, "a"); got != pid || a.Err() != nil {
		t.Fatalf("a on backend %d (was %d), Err %v", got, pid, a.Err())
	}
}

// nsHolders counts the distinct backends holding keys of namespace ns
// among keys.
func nsHolders(t *testing.T, db *sql.DB, ns string, keys []string) int {
	t.Helper()
	want := map[[2]int64]bool{}
	for _, k := range keys {
		c, o := postgres.LockTag(postgres.KeyID(ns, k))
		want[[2]int64{int64(c), int64(o)}] = true
	}
	rows, err := db.Query(`SELECT pid, classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	pids := map[int]bool{}
	for rows.Next() {
		var pid int
		var tag [2]int64
		if err := rows.Scan(&pid, &tag[0], &tag[1]); err != nil {
			t.Fatal(err)
		}
		if want[tag] {
			pids[pid] = true
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return len(pids)
}

// sessionsOf counts the server connections of the client holding key in
// ns, by the application_name the driver gives its sessions ("mutexkit
// <client>..."), or returns -1 if its holder's session has another name
// (an application's pool that names its connections).
func sessionsOf(t *testing.T, db *sql.DB, ns, key string) int {
	t.Helper()
	var name string
	if err := db.QueryRow(`SELECT application_name FROM pg_stat_activity WHERE pid = $1`, HolderPID(t, db, ns, key)).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "mutexkit ") {
		return -1
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitersOn counts the backends waiting in the server for key of ns.
func waitersOn(t *testing.T, db *sql.DB, ns, key string) int {
	t.Helper()
	classid, objid := postgres.LockTag(postgres.KeyID(ns, key))
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND NOT granted
		AND classid = $1 AND objid = $2`, int64(classid), int64(objid)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TwoThousandKeysFewSessions: 2,000 held keys share at most MaxSessions
// connections, and waiters of one key add one (its wait in the server:
// the client's Locks of one key queue in the client, one at a time in the
// server).
func TwoThousandKeysFewSessions(t *testing.T, c Client) {
	dsn, db := adminDB(t)
	ns := Namespace(t)
	// The default heartbeat: under -race, a TryLock here may wait for a
	// session longer than two and a half test heartbeats, and package
	// mutex counts a session lease's first verification from the
	// attempt's start.
	hb := mutex.WithHeartbeat(mutex.DefaultHeartbeat)
	mc, other := open(t, c, dsn, ns, nil, hb), open(t, c, dsn, ns, nil, hb)
	const n, workers = 2000, 16
	var wg sync.WaitGroup
	keys := make([]string, n)
	leases := make([]*mutex.Lease, n)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				keys[i] = fmt.Sprint("many/", i)
				l, err := mc.NewMutex(keys[i]).TryLock(t.Context())
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
				l, err := mc.NewMutex("blocked").Lock(ctx)
				if err != nil {
					return
				}
				l.Unlock(context.Background())
			}
		})
	}
	WaitFor(t, "a wait in the server", func() bool { return waitersOn(t, db, ns, "blocked") == 1 })
	holders, waiting, sessions := nsHolders(t, db, ns, keys), waitersOn(t, db, ns, "blocked"), sessionsOf(t, db, ns, keys[0])
	cancel()
	waiters.Wait()
	blocker.Unlock(t.Context())
	if holders > postgres.MaxSessions || waiting > 1 {
		t.Fatalf("%d held keys on %d backends, and %d of its 10 waiters waiting in the server; want at most %d and 1", n, holders, waiting, postgres.MaxSessions)
	}
	if sessions > postgres.MaxSessions+1 {
		t.Fatalf("%d server connections for %d held keys and 10 waiters; want at most %d", sessions, n, postgres.MaxSessions+1)
	}
	t.Logf("%d keys held on %d backends, 10 waiters with %d wait in the server; %d server connections of the client's name (-1: not named)", n, holders, waiting, sessions)
	for _, i := range []int{0, 999, 1999} {
		if _, err := other.NewMutex(keys[i]).TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("%s from another client: %v; want ErrLocked", keys[i], err)
		}
	}
	for _, l := range leases {
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// MaxKeys: the per-client cap gives a clear error before the server's lock
// table fills.
func MaxKeys(t *testing.T, c Client) {
	dsn, _ := adminDB(t)
	mc := open(t, c, dsn, Namespace(t), []postgres.Option{postgres.WithMaxKeys(3)})
	var leases []*mutex.Lease
	for i := range 3 {
		l, err := mc.NewMutex(fmt.Sprint("k", i)).TryLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	_, err := mc.NewMutex("k3").TryLock(t.Context())
	if !errors.Is(err, postgres.ErrTooManyKeys) {
		t.Fatalf("fourth key: %v; want ErrTooManyKeys", err)
	}
	t.Logf("fourth key: %v", err)
	leases[0].Unlock(t.Context())
	if _, err := mc.NewMutex("k3").TryLock(t.Context()); err != nil {
		t.Fatalf("after a release: %v", err)
	}
}
