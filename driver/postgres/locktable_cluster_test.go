package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// A full server lock table, on a private cluster with a tiny one (the
// shared test server's table must not be exhausted): the default per-client
// cap (half the table, here smaller than DefaultMaxKeys) refuses with
// ErrTooManyKeys while the table still has room; once raw SQL sessions
// have filled the table (SQLSTATE 53200), TryLock fails with the
// documented "lock table is full" error matching driver.ErrUnavailable,
// takes nothing, and keeps the session and the key the client already
// held (and every session it had: a client may have several, as a TryLock
// that finds each one's statement slot taken opens another); once the raw
// sessions let go, locking works again.
func TestClusterLockTableFull(t *testing.T) {
	pg := testserver.StartPGCluster(t, testserver.PGClusterOptions{Settings: map[string]string{
		"max_locks_per_transaction": "10",
		"max_connections":           "20",
		"autovacuum":                "off", // nothing else takes or frees entries meanwhile
	}})
	ctx := t.Context()

	// Every connection is opened before the table fills: a backend needs a
	// lock-table entry to start.
	raw, err := sql.Open("postgres", pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	pin := func() *sql.Conn {
		c, err := raw.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	admin := pin()
	fillers := []*sql.Conn{pin(), pin()}

	var table int64 // as the driver computes it
	if err := admin.QueryRowContext(ctx, `SELECT current_setting('max_locks_per_transaction')::bigint *
		(current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint)`).Scan(&table); err != nil {
		t.Fatal(err)
	}
	wantCap := int(table / 2)
	if wantCap <= 1 || wantCap >= DefaultMaxKeys {
		t.Fatalf("lock table of %d entries: the test needs half of it between 1 and DefaultMaxKeys", table)
	}

	ns := namespace(t)
	c, l := testClient(t, pg.DSN("", nil), ns)
	heldByClient := func() (keys []string) {
		t.Helper()
		rows, err := admin.QueryContext(ctx, `SELECT l.classid, l.objid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND a.application_name = $1`, l.appName)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var classid, objid int64
			if err := rows.Scan(&classid, &objid); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, fmt.Sprintf("%d/%d", classid, objid))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	tag := func(key string) string {
		classid, objid := LockTag(KeyID(ns, key))
		return fmt.Sprintf("%d/%d", classid, objid)
	}

	// A second session, as a TryLock makes when it finds the first one's
	// statement slot taken (by a heartbeat's verification, say: on a
	// loaded machine this happens by itself): a full table must cost the
	// client none of its sessions.
	l.mu.Lock()
	first := l.sessions[0]
	l.mu.Unlock()
	for !first.tryTake() {
		time.Sleep(time.Millisecond)
	}
	second, err := l.session(ctx)
	first.give()
	if err != nil {
		t.Fatal(err)
	}
	second.give()

	// The default cap: half the server's table, smaller than DefaultMaxKeys.
	var leases []*mutex.Lease
	for i := 0; ; i++ {
		lease, err := c.NewMutex(fmt.Sprintf("cap-%d", i)).TryLock(ctx)
		if err != nil {
			if !errors.Is(err, ErrTooManyKeys) || i != wantCap {
				t.Fatalf("TryLock of key %d: %v; want ErrTooManyKeys at key %d (half the table of %d)", i, err, wantCap, table)
			}
			break
		}
		if i >= wantCap {
			lease.Unlock(ctx)
			t.Fatalf("TryLock of key %d succeeded; want ErrTooManyKeys from key %d (half the table of %d)", i, wantCap, table)
		}
		leases = append(leases, lease)
	}
	if got := len(heldByClient()); got != wantCap {
		t.Fatalf("pg_locks shows %d advisory locks of the client; want its cap %d", got, wantCap)
	}
	// The cap refused while the table still had room.
	var ok bool
	if err := fillers[0].QueryRowContext(ctx, `SELECT pg_try_advisory_lock(-1) AND pg_advisory_unlock(-1)`).Scan(&ok); err != nil || !ok {
		t.Fatalf("a raw session could not lock with the client at its cap: %v, %v; the cap should leave room", ok, err)
	}
	kept := leases[0]
	for _, lease := range leases[1:] {
		if err := lease.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Fill the table from raw sessions. Session-level advisory locks taken
	// by a statement that then fails stay held.
	var next int64 = 1
	fill := func() int {
		t.Helper()
		taken := 0
		for i := 0; ; i++ {
			var n int
			err := fillers[i%len(fillers)].QueryRowContext(ctx,
				`SELECT count(*) FROM generate_series($1::bigint, $2::bigint) i WHERE pg_try_advisory_lock(i)`,
				next, next+49).Scan(&n)
			next += 50
			if err != nil {
				if !outOfLocks(err) {
					t.Fatalf("filling the lock table: %v; want SQLSTATE 53200", err)
				}
				return taken
			}
			taken += n
			if next > 1_000_000 {
				t.Fatalf("took %d locks without filling the lock table", taken)
			}
		}
	}
	filled := fill()
	t.Logf("lock table of %d entries by the settings; filled by %d raw locks, plus the client's", table, filled)
	for _, f := range fillers { // the table stays full
		_, err := f.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, next)
		if !outOfLocks(err) {
			t.Fatalf("pg_advisory_lock on a full table: %v; want SQLSTATE 53200", err)
		}
	}

	// The sessions the client has now, with the table full: the two made
	// above, or more (sessions are kept until the client closes).
	l.mu.Lock()
	before := slices.Clone(l.sessions)
	l.mu.Unlock()
	t.Logf("%d lock sessions with the table full", len(before))

	// A full table is reported as such, twice: the first attempt was
	// forgotten. Something of the server's freeing an entry in between
	// lets an attempt through: fill again and retry.
	for attempt := 0; attempt < 2; {
		lease, err := c.NewMutex("victim").TryLock(ctx)
		if err == nil {
			t.Logf("TryLock got through a full table: an entry was freed; filling again")
			if err := lease.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			if filled > 1_000_000 {
				t.Fatal("the lock table does not stay full")
			}
			filled += fill()
			continue
		}
		attempt++
		var pe *pq.Error
		switch {
		case !strings.Contains(err.Error(), "lock table is full") || !errors.Is(err, driver.ErrUnavailable):
			t.Fatalf("TryLock on a full table: %v; want the driver's \"lock table is full\" error matching driver.ErrUnavailable", err)
		case !errors.As(err, &pe) || pe.Code != "53200":
			t.Fatalf("TryLock on a full table: %v; want it to carry the server's SQLSTATE 53200", err)
		case errors.Is(err, ErrTooManyKeys), errors.Is(err, driver.ErrLocked), errors.Is(err, mutex.ErrLocked):
			t.Fatalf("TryLock on a full table: %v; want neither ErrTooManyKeys nor ErrLocked", err)
		}
	}
	l.mu.Lock()
	nHeld := len(l.held)
	_, victim := l.held["victim"]
	var lostSessions int
	for _, s := range before {
		if s.dead || !slices.Contains(l.sessions, s) {
			lostSessions++
		}
	}
	l.mu.Unlock()
	if victim || nHeld != 1 {
		t.Errorf("after the failed attempts the client tracks %d keys (victim: %v); want only the key it held", nHeld, victim)
	}
	if lostSessions != 0 {
		t.Errorf("the failed attempts cost the client %d of its %d lock sessions; want every one kept", lostSessions, len(before))
	}
	if err := kept.Err(); err != nil {
		t.Fatalf("the lease held before the table filled: %v; a full table must not cost the client its locks", err)
	}
	// A new server connection needs an entry too: a client that cannot
	// open its session says why.
	conn, err := NewConnector(pg.DSN("", nil), WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	if lk, err := conn.Connect(ctx); err == nil {
		lk.Close()
		t.Logf("a new client connected to a full table: an entry was freed")
	} else if !strings.Contains(err.Error(), "lock table is full") || !errors.Is(err, driver.ErrUnavailable) {
		t.Errorf("Connect on a full table: %v; want the \"lock table is full\" error matching driver.ErrUnavailable", err)
	}

	// The raw sessions let go: the client held only its key, and locks again.
	for _, f := range fillers {
		if _, err := f.ExecContext(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
			t.Fatal(err)
		}
	}
	if got := heldByClient(); len(got) != 1 || got[0] != tag(kept.Key()) {
		t.Fatalf("the client's advisory locks in pg_locks: %v; want only the kept key's %s (not the victim's %s)", got, tag(kept.Key()), tag("victim"))
	}
	lease, err := c.NewMutex("victim").TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock once the table has room again: %v", err)
	}
	if err := lease.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := kept.Unlock(ctx); err != nil {
		t.Fatalf("Unlock of the lease held throughout: %v", err)
	}
	if got := heldByClient(); len(got) != 0 {
		t.Fatalf("the client still holds %v after unlocking everything", got)
	}
	// A new client connects and locks.
	c2, _ := testClient(t, pg.DSN("", nil), ns)
	lease, err = c2.NewMutex("victim").TryLock(context.Background())
	if err != nil {
		t.Fatalf("a new client's TryLock: %v", err)
	}
	if err := lease.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}
