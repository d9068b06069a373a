package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/mutex"
)

// A cron job that must run in one pod at a time.
func Example() {
	client, err := mutex.Open("postgres://app@db:5432/app?sslmode=disable&mutexkit_namespace=cron")
	if err != nil {
		panic(err)
	}
	defer client.Close()
	ctx := context.Background()
	err = client.NewMutex("nightly-report", mutex.WithFencing()).Do(ctx, func(ctx context.Context) error {
		// Work here; ctx ends (cause mutex.ErrLockLost) if the lock
		// session dies. Pass the lease's fencing token to what you write.
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
}

// A client on the application's own *sql.DB (lib/pq's): lock sessions are
// taken from its pool for good. An *sqlx.DB's pool is its DB field.
func ExampleFromDB() {
	dsn := "postgres://app@db:5432/app?sslmode=disable"
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		panic(err)
	}
	defer db.Close()
	client := mutex.NewClient(postgres.FromDB(db, postgres.WithNamespace("cron")))
	defer client.Close()
	lease, err := client.NewMutex("nightly-report").TryLock(context.Background())
	if err != nil {
		fmt.Println(err) // errors.Is(err, mutex.ErrLocked): another holder has it
		return
	}
	defer lease.Unlock(context.Background())
}

// A keyword DSN, which mutex.Open (URLs only) does not take, with this
// driver's parameters and options.
func ExampleNewConnector() {
	conn, err := postgres.NewConnector("host=db dbname=app user=app sslmode=disable mutexkit_namespace=cron",
		postgres.WithStatementTimeout(2*time.Second))
	if err != nil {
		panic(err) // errors.Is(err, mutex.ErrInvalid), without the password
	}
	client := mutex.NewClient(conn, mutex.WithHeartbeat(500*time.Millisecond))
	defer client.Close()
}

// The transaction-scoped lock: released when the transaction ends, by
// commit or rollback, and it excludes Mutex holders of the same key.
func ExampleLockTx() {
	db, err := sql.Open("postgres", "postgres://app@db:5432/app?sslmode=disable")
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	defer tx.Rollback()
	if err := postgres.LockTx(ctx, tx, "cron", "nightly-report"); err != nil {
		panic(err)
	}
	// ... the transaction's work, under the lock ...
	if err := tx.Commit(); err != nil { // releases the lock
		panic(err)
	}
}

// Finding a client's lock in pg_locks.
func ExampleKeyID() {
	id := postgres.KeyID("cron", "nightly-report")
	classid, objid := postgres.LockTag(id)
	fmt.Printf("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND classid = %d AND objid = %d\n", classid, objid)
	// Output:
	// SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND classid = 2452220366 AND objid = 2572121955
}
