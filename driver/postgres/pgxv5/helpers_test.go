package pgxv5_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/internal/pgsuite"
	"github.com/mutexkit/mutexkit/driver/postgres/pgxv5"
	"github.com/mutexkit/mutexkit/mutex"
)

// The pgx side of the module's own tests; the helpers on the server's
// side (namespaces, pg_locks, waits) are package pgsuite's.

// newPool opens a pgx pool on dsn with at most maxConns connections (0:
// pgxpool's default), closed when t ends.
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

// openClient makes a client of pool in namespace ns, with a short
// heartbeat, closed when t ends. It connects now, so that the first
// session exists before the test's first call.
func openClient(t testing.TB, pool *pgxpool.Pool, ns string, opts ...postgres.Option) *mutex.Client {
	t.Helper()
	mc := mutex.NewClient(pgxv5.FromPool(pool, append([]postgres.Option{postgres.WithNamespace(ns)}, opts...)...),
		mutex.WithHeartbeat(pgsuite.Heartbeat))
	t.Cleanup(func() { mc.Close() })
	if err := mc.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	return mc
}
