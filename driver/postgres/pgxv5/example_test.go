package pgxv5_test

import (
	"context"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/pgxv5"
	"github.com/mutexkit/mutexkit/mutex"
)

// A cron job that must run in one pod at a time, locked through the
// service's own pgx pool. The pool must have connections to spare for the
// client's lock sessions.
func ExampleFromPool() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@db:5432/app?sslmode=disable&pool_max_conns=20")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close() // after the client's Close: it waits for the client's connections

	client := mutex.NewClient(pgxv5.FromPool(pool, postgres.WithNamespace("cron")))
	defer client.Close()

	err = client.NewMutex("nightly-report", mutex.WithFencing()).Do(ctx, func(ctx context.Context) error {
		// Work here; ctx ends (cause mutex.ErrLockLost) if the lock
		// session dies. Pass the lease's fencing token to what you write.
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
}
