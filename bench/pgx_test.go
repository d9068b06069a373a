package bench

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/pgxv5"
	"github.com/mutexkit/mutexkit/mutex"
)

// openPgx opens ours through an application's pgx pool (issue 15:
// pgxv5.FromPool), on the PostgreSQL the other rows use, with a pool large
// enough for the client's sessions. The lock statements, sessions and
// checks are the lib/pq path's; only the connections are pgx's, so
// impl=ours-pgx beside impl=ours is the cost of the client library.
func openPgx(b testing.TB, opts ...mutex.Option) *mutex.Client {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(postgresDSN(b))
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = poolSize
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close) // after the mutex client's Close (cleanups run last first)
	return pinged(b, mutex.NewClient(pgxv5.FromPool(pool, postgres.WithNamespace(b.Name())), opts...))
}
