// Package pgxv5 lets mutexkit's PostgreSQL driver (package postgres) lock
// through the application's own pgx pool (github.com/jackc/pgx/v5,
// *pgxpool.Pool): FromPool. It is a module of its own, so that the core
// does not make every user download pgx.
//
// Only the connections are pgx's: the Locker, its sessions and their
// settings, the advisory lock statements, fencing, the wait in the
// server's lock queue, the verification of leases and every deadline are
// package postgres's, one code path with lib/pq. So a lib/pq client and a
// pgx client exclude each other on one key, and mutexkit status reads
// either one's holders. The options are package postgres's (WithNamespace,
// WithStatementTimeout, WithKeepalive, WithMaxKeys).
//
// Lock sessions are connections acquired from the pool (through pgx's own
// database/sql adapter, package stdlib) for as long as the client lives;
// they count against its MaxConns, and so do waits in the server, each on
// a waiter session of its own: a client holds up to postgres.MaxSessions
// lock sessions and postgres.MaxWaiters waiter sessions, and for a moment
// one more to cancel its waits in the server (and any connection the pool
// gives after the wait for it was given up, until it is closed). It waits
// for one (up to the reply deadline) when the pool has none to spare. A
// connection that was a session is never released back holding locks or
// the driver's session settings: it is closed, which ends its server
// session and frees its locks, and pgxpool destroys it. No other
// connection is dialled: there is no LISTEN connection.
//
// pgx's server errors (*pgconn.PgError) are classified as lib/pq's are: an
// ERROR (a statement or lock timeout) leaves the session and its leases in
// place, FATAL or a broken connection ends them, a refusal (a wrong
// password, an unknown database, a missing privilege) is driver.ErrDenied,
// anything else driver.ErrUnavailable. Errors never carry the pool's
// password.
//
// No caller's context reaches a statement on a session: pgx ends a query
// whose context ends by closing the connection, which would drop every
// lock on it. A cancelled Lock stops waiting (its wait in the server is
// cancelled with pg_cancel_backend on its own waiter session), and
// statements are bounded by the server's statement_timeout and a reply
// deadline on the session's socket instead. The pool's TCP keepalive is
// the pool's (its dialer's); the driver still sets the server side of it
// on each session (postgres.WithKeepalive), so the server frees the locks
// of a client cut off by the network.
//
// Close the mutex client before the pool: pgxpool's Close waits for the
// connections the client still holds.
//
// Not postgres.FromDB(stdlib.OpenDBFromPool(pool)): pgx's database/sql
// adapter would release each lock session back to the pool, locks and
// settings included, so FromDB's Connect refuses a *sql.DB of that adapter
// (driver.ErrInvalid).
package pgxv5
