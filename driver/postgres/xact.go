package postgres

import (
	"context"
	"database/sql"
	"fmt"
)

// Tx is what the transaction-scoped helpers need of a transaction:
// *sql.Tx and *sqlx.Tx have it, as do *sql.Conn and *sql.DB (but see
// LockTx).
type Tx interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// LockTx takes the exclusive advisory lock of key in namespace (the lock a
// Mutex of a client with that namespace takes, see KeyID) inside tx, with
// pg_advisory_xact_lock, waiting while another holds it. The lock is
// released when tx commits or rolls back; there is no unlock function, and
// it cannot be released sooner. It excludes, and is excluded by, Mutex
// holders of the same key.
//
// ctx ending while it waits makes lib/pq cancel the statement, which
// aborts tx: roll it back. Use it in a real transaction: outside one (on a
// *sql.DB) the lock would end with the statement that took it.
func LockTx(ctx context.Context, tx Tx, namespace, key string) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, KeyID(namespace, key)); err != nil {
		return fmt.Errorf("postgres: pg_advisory_xact_lock: %w", err)
	}
	return nil
}

// TryLockTx is LockTx without waiting: it reports whether it took the lock
// (pg_try_advisory_xact_lock).
func TryLockTx(ctx context.Context, tx Tx, namespace, key string) (bool, error) {
	var ok bool
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, KeyID(namespace, key)).Scan(&ok); err != nil {
		return false, fmt.Errorf("postgres: pg_try_advisory_xact_lock: %w", err)
	}
	return ok, nil
}

// LockTxShared takes the shared (reader) advisory lock of key inside tx
// (pg_advisory_xact_lock_shared): any number of transactions hold it at
// once, and it excludes the exclusive lock, so a Mutex on key waits until
// every reader's transaction has ended, and readers wait for its holder.
// Released at commit or rollback, like LockTx.
func LockTxShared(ctx context.Context, tx Tx, namespace, key string) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock_shared($1)`, KeyID(namespace, key)); err != nil {
		return fmt.Errorf("postgres: pg_advisory_xact_lock_shared: %w", err)
	}
	return nil
}

// TryLockTxShared is LockTxShared without waiting.
func TryLockTxShared(ctx context.Context, tx Tx, namespace, key string) (bool, error) {
	var ok bool
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock_shared($1)`, KeyID(namespace, key)).Scan(&ok); err != nil {
		return false, fmt.Errorf("postgres: pg_try_advisory_xact_lock_shared: %w", err)
	}
	return ok, nil
}
