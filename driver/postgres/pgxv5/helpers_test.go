package pgxv5_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	_ "github.com/lib/pq" // database/sql's "postgres", the observer's client

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/pgxv5"
	"github.com/mutexkit/mutexkit/mutex"
)

// newPool opens a pgx pool on the test server, closed when t ends.
func newPool(t testing.TB, dsn string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// openAdmin opens a lib/pq *sql.DB on dsn, for looking at pg_locks and
// ending backends from outside the clients under test.
func openAdmin(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func uniqueNamespace(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	return t.Name() + "/" + hex.EncodeToString(b[:])
}

// heldBy returns the backend pids that hold key (namespace ns) in
// pg_locks.
func heldBy(t testing.TB, admin *sql.DB, ns, key string) []int {
	t.Helper()
	classid, objid := postgres.LockTag(postgres.KeyID(ns, key))
	rows, err := admin.Query(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
		AND granted AND classid = $1 AND objid = $2`, int64(classid), int64(objid))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var pids []int
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return pids
}

// openClient makes a client of pool in namespace ns, with a short
// heartbeat, closed when t ends. It connects now, so that the first
// session exists before the test's first call.
func openClient(t testing.TB, pool *pgxpool.Pool, ns string, opts ...postgres.Option) *mutex.Client {
	t.Helper()
	mc := mutex.NewClient(pgxv5.FromPool(pool, append([]postgres.Option{postgres.WithNamespace(ns)}, opts...)...),
		mutex.WithHeartbeat(100*time.Millisecond))
	t.Cleanup(func() { mc.Close() })
	if err := mc.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	return mc
}

// holderPID returns the backend pid holding key in namespace ns, or 0.
func holderPID(t testing.TB, admin *sql.DB, ns, key string) int {
	t.Helper()
	pids := heldBy(t, admin, ns, key)
	switch len(pids) {
	case 0:
		return 0
	case 1:
		return pids[0]
	}
	t.Fatalf("%q held by %v at once", key, pids)
	return 0
}

// blockFencedAcquire makes the next fenced acquisition of key wait on
// the server: the fencing row is written, then locked by a transaction of
// admin's, rolled back when t ends.
func blockFencedAcquire(t *testing.T, admin *sql.DB, mc *mutex.Client, ns, key string) *sql.Tx {
	t.Helper()
	l, err := mc.NewMutex(key, mutex.WithFencing()).TryLock(t.Context()) // writes the row
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	tx, err := admin.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback() })
	if _, err := tx.Exec(`SELECT 1 FROM `+postgres.FencingTable+` WHERE key_id = $1 FOR UPDATE`, postgres.KeyID(ns, key)); err != nil {
		t.Fatal(err)
	}
	return tx
}

// waitFor polls cond until it holds or a generous bound passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
