// Package postgres is a lock driver on PostgreSQL session-level advisory
// locks, through github.com/lib/pq. It registers for the URL schemes
// "postgres" and "postgresql".
//
//	import _ "github.com/mutexkit/mutexkit/driver/postgres"
//
//	client, err := mutex.Open("postgres://app:secret@db:5432/app?sslmode=require&mutexkit_namespace=billing")
//	if err != nil { ... }
//	defer client.Close()
//	err = client.NewMutex("nightly-report").Do(ctx, func(ctx context.Context) error {
//		// ctx is cancelled, with cause mutex.ErrLockLost, if the lock session dies
//		return runReport(ctx)
//	})
//
// or, with the application's own pool (an *sqlx.DB's is its DB field):
//
//	client := mutex.NewClient(postgres.FromDB(db))
//
// or from a keyword DSN, which mutex.Open does not take:
//
//	conn, err := postgres.NewConnector("host=db dbname=app user=app mutexkit_namespace=billing")
//	client := mutex.NewClient(conn)
//
// or through the application's pgx pool (*pgxpool.Pool), with
// FromPool of the module github.com/mutexkit/mutexkit/driver/postgres/pgxv5.
//
// docs/POSTGRES.md has the whole story; in short:
//
// # DSN and options
//
// A libpq URL or keyword string that names a database, read by lib/pq
// (pq.NewConfig, which also reads the PG* environment variables).
// Parameters starting with mutexkit_ are this driver's and never reach the
// server: mutexkit_namespace, mutexkit_statement_timeout (5s),
// mutexkit_keepalive_idle, _interval (seconds, 5 and 5) and _count (3),
// mutexkit_max_keys (4096 or half the server's lock table). The Option
// functions set the same, and override the DSN. Errors never contain the
// password. A server that refuses the client (a wrong password, an unknown
// role or database, a missing privilege) gives an error matching
// driver.ErrDenied, which nothing retries; one that cannot be reached or
// does not answer, driver.ErrUnavailable.
//
// # Keys
//
// A key maps to the bigint advisory lock key KeyID(namespace, key), a
// SHA-256 of the two, length-prefixed. SQL locking pg_advisory_lock of that
// id (KeyIDSQL computes it in SQL) excludes a Mutex and is excluded by it;
// pg_locks shows it at LockTag(id) with objsubid 1.
//
// # Sessions
//
// A client's held keys share at most MaxSessions (4) dedicated
// connections, and each of its waits in the server has one more (see
// Waiting). Lock and
// unlock of a key run on the session that holds it; a key is never asked
// for twice on one session (PostgreSQL would grant it again and stack it);
// pg_advisory_unlock returning false is an error matching
// driver.ErrNotHeld. Sessions are never handed back to a pool: they are
// discarded. No caller's context ever cancels a statement on a session
// (lib/pq would close the connection, dropping every lock on it):
// statements are bounded on the server by statement_timeout and
// lock_timeout instead, and every wait for a reply by the reply deadline
// (the statement timeout plus half a second). Unlock returns when its
// context ends, and its release then goes on in the background. A session
// found dead while idle is replaced, and the call runs on a new one.
//
// # Loss
//
// Grants do not expire. Package mutex verifies them every heartbeat
// (mutex.WithHeartbeat, 1 s by default) through Renew, one statement per
// session: a session that died (pg_terminate_backend, a server restart, an
// idle killer) loses its leases at the next heartbeat, and one that stops
// answering (a stopped backend, a partition behind a proxy that still
// acknowledges) within about two heartbeats and a half of its last
// answer. A session busy with a statement that waits on the server is
// vouched for by another session (its backend in pg_stat_activity). The
// server frees the locks the moment the session ends, so another holder
// may already have the key when the loss is reported: guard the resource
// with fencing tokens (mutex.WithFencing; the table FencingTable is made
// on the first fenced grant). TCP keepalives on both ends of each session
// (WithKeepalive) bound how long a client cut off by the network keeps its
// locks (about 20 s).
//
// # Waiting
//
// Waiters wait in PostgreSQL's own lock queue, which serves them in
// arrival order and hands a released key to the first of them at once: a
// Lock that finds the key held runs pg_advisory_lock on a waiter session
// of its own (at most MaxWaiters per client; beyond, Locks poll), and the
// key the server grants it there is kept for it and becomes its lease. A
// TryLock is refused while waiters are queued. One release wakes one
// waiter, with no NOTIFY and no table. A waiter that gives up leaves the
// queue at once (pg_cancel_backend), one whose process dies leaves with
// its connection, and one that stops asking is passed over
// driver.QueueHold after its last attempt. A wait lasts up to five minutes
// in the server (lock_timeout) before it is made again, at the tail: a
// Lock that waits longer may be passed, once per five minutes, by those
// that came in its last five.
//
// # Refused setups
//
// A hot standby (ErrStandby) and a transaction-pooling proxy such as
// pgbouncer in transaction mode (ErrTransactionPooling, detected when a
// session's statements reach different backends) are refused. Behind
// such a proxy use LockTx, which holds a transaction-scoped lock in the
// caller's *sql.Tx (or *sqlx.Tx), or connect directly or through session
// pooling.
package postgres
