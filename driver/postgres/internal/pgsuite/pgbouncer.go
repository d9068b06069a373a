package pgsuite

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// warmPool makes pgbouncer open n server connections for db: n
// transactions open at once through it, then committed.
func warmPool(t *testing.T, b *testserver.PGBouncer, db string, n int) {
	t.Helper()
	pool, err := sql.Open("postgres", b.DSN(db, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	txs := make([]*sql.Tx, n)
	pids := map[int]bool{}
	for i := range txs {
		if txs[i], err = pool.BeginTx(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		var pid int
		if err := txs[i].QueryRow(`SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids[pid] = true
	}
	for _, tx := range txs {
		tx.Commit()
	}
	if len(pids) != n {
		t.Fatalf("warming the pool: %d transactions at once ran on %d backends", n, len(pids))
	}
}

func checkTxPooling(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case !errors.Is(err, postgres.ErrTransactionPooling):
		t.Fatalf("%s: %v; want ErrTransactionPooling", what, err)
	case !errors.Is(err, driver.ErrInvalid) && !errors.Is(err, mutex.ErrLockLost):
		t.Errorf("%s: %v; want it to match driver.ErrInvalid (or mutex.ErrLockLost for a lease)", what, err)
	case !strings.Contains(err.Error(), "pgbouncer"):
		t.Errorf("%s: %v; want a message naming the likely cause", what, err)
	}
	t.Logf("%s: %v", what, err)
}

// ClusterPgBouncer: pgbouncer in front of the server: in session pooling mode the driver
// works (a client keeps its server connection); in transaction pooling
// mode session-level locks cannot work, and the driver refuses it as soon
// as one session's statements reach two backends: at Connect when the
// proxy switches at once (round robin over warm server connections), or
// on the next statement or verification when it switches later (another
// client's transaction took the backend the lock was on), reporting the
// lease lost. Skipped when pgbouncer is not installed.
func ClusterPgBouncer(t *testing.T, c Client) {
	if _, err := testserver.PGBouncerBinary(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	pg := testserver.StartPGCluster(t, testserver.PGClusterOptions{})
	admin := pg.AdminDB()
	defer admin.Close()

	t.Run("SessionPooling", func(t *testing.T) {
		b := testserver.StartPGBouncer(t, pg, testserver.PGBouncerOptions{RoundRobin: true})
		warmPool(t, b, "sesspool", 3)
		ns := Namespace(t)
		mc := open(t, c, b.DSN("sesspool", ""), ns, nil)
		lease, err := mc.NewMutex("k").TryLock(t.Context())
		if err != nil {
			t.Fatalf("TryLock through pgbouncer in session mode: %v", err)
		}
		if HolderPID(t, admin, ns, "k") == 0 {
			t.Fatal("the lock is not on the server")
		}
		other := open(t, c, b.DSN("sesspool", ""), ns, nil)
		if _, err := other.NewMutex("k").TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("a second client: %v; want ErrLocked", err)
		}
		time.Sleep(300 * time.Millisecond) // a few heartbeats: nothing is lost
		if err := lease.Err(); err != nil {
			t.Fatalf("lease: %v", err)
		}
		if err := lease.Unlock(t.Context()); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
		if pid := HolderPID(t, admin, ns, "k"); pid != 0 {
			t.Fatalf("backend %d still holds the key after Unlock", pid)
		}
	})

	t.Run("TransactionPoolingRefusedAtConnect", func(t *testing.T) {
		b := testserver.StartPGBouncer(t, pg, testserver.PGBouncerOptions{RoundRobin: true})
		warmPool(t, b, "txpool", 3)
		err := ping(t, c, b.DSN("txpool", ""))
		checkTxPooling(t, "Ping", err)

		mc := open(t, c, b.DSN("txpool", ""), Namespace(t), nil)
		_, err = mc.NewMutex("k").TryLock(t.Context())
		checkTxPooling(t, "TryLock", err)
	})

	t.Run("TransactionPoolingWait", func(t *testing.T) {
		// A Lock that waits in the server, on a waiter session of its own,
		// fails as TryLock does: the lock session that checks the wait is
		// queued reaches another backend (the waiter's is busy waiting).
		// Before, the error was dropped: the Lock took the key kept on the
		// waiter session, lost it at the next heartbeat, and left it held
		// on the proxy's server connection.
		b := testserver.StartPGBouncer(t, pg, testserver.PGBouncerOptions{})
		warmPool(t, b, "txpool", 3)
		ns := Namespace(t)
		holder := open(t, c, pg.DSN("", nil), ns, nil)
		lease, err := holder.NewMutex("k").TryLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		mc := open(t, c, b.DSN("txpool", ""), ns, nil)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		_, err = mc.NewMutex("k").Lock(ctx)
		checkTxPooling(t, "Lock", err)
		if err := lease.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
		mc.Close()
		deadline := time.Now().Add(30 * time.Second)
		for HolderPID(t, admin, ns, "k") != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the key is still held on the server 30s after the holder released it and the waiting client closed")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("TransactionPoolingLeaseLost", func(t *testing.T) {
		// Most recently used server connection first (pgbouncer's default):
		// a lone client stays on one backend, so Connect cannot tell.
		b := testserver.StartPGBouncer(t, pg, testserver.PGBouncerOptions{})
		warmPool(t, b, "txpool", 3)
		ns := Namespace(t)
		mc := open(t, c, b.DSN("txpool", ""), ns, nil)
		lease, err := mc.NewMutex("k").TryLock(t.Context())
		if err != nil {
			t.Fatalf("TryLock: %v", err)
		}
		pid := HolderPID(t, admin, ns, "k")
		if pid == 0 {
			t.Fatal("the lock is not on the server")
		}
		// Another application's transaction takes that backend; the lock
		// client's next statement goes elsewhere.
		pool, err := sql.Open("postgres", b.DSN("txpool", ""))
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		// Transactions that reach other backends stay open until one
		// reaches the lock's, so pgbouncer cannot hand the same one out
		// again; then they end, and the lock client gets one of those.
		var stolen *sql.Tx
		var others []*sql.Tx
		deadline := time.Now().Add(30 * time.Second)
		for stolen == nil {
			if time.Now().After(deadline) {
				t.Fatalf("no transaction through pgbouncer reached backend %d within 30s", pid)
			}
			tx, err := pool.BeginTx(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var got int
			if err := tx.QueryRow(`SELECT pg_backend_pid()`).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got == pid {
				stolen = tx
			} else {
				others = append(others, tx)
			}
		}
		defer stolen.Rollback()
		for _, tx := range others {
			tx.Rollback()
		}
		select {
		case <-lease.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("the lease was not reported lost within 30s of its backend being taken by another client")
		}
		checkTxPooling(t, "lease", lease.Err())
		// The lock stays on the backend the proxy gave to someone else:
		// the hazard the docs warn of. Nothing client-side can free it.
		if got := HolderPID(t, admin, ns, "k"); got != pid {
			t.Errorf("after the loss the key is held by backend %d; expected it left on %d", got, pid)
		}
	})
}
