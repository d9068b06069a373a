// Package mysql is a lock driver on MySQL and MariaDB user-level locks
// (GET_LOCK, RELEASE_LOCK, IS_USED_LOCK), through
// github.com/go-sql-driver/mysql. It registers for the URL scheme "mysql".
// It needs MySQL 5.7+ or MariaDB 10.0.2+ (several locks per session);
// LockNameSQL needs MySQL 8.0+ or MariaDB 10.0.5+ (REGEXP_SUBSTR).
//
//	import _ "github.com/mutexkit/mutexkit/driver/mysql"
//
//	client, err := mutex.Open("mysql://app:secret@db:3306/app?mutexkit_namespace=billing")
//	if err != nil { ... }
//	defer client.Close()
//	err = client.NewMutex("nightly-report").Do(ctx, func(ctx context.Context) error {
//		// ctx is cancelled, with cause mutex.ErrLockLost, if the lock session dies
//		return runReport(ctx)
//	})
//
// or with the application's own pool, or go-sql-driver's DSN form, which
// mutex.Open does not take:
//
//	client := mutex.NewClient(mysql.FromDB(db))
//	conn, err := mysql.NewConnector("app:secret@tcp(db:3306)/app?mutexkit_namespace=billing")
//
// docs/MYSQL.md has the whole story; in short:
//
// # Keys
//
// A key maps to the lock name LockName(namespace, key): "mk/", a readable
// prefix of the key, "/", and 128 bits of a SHA-256 of both, at most 64
// characters. LockNameSQL computes it in SQL: GET_LOCK of that name
// excludes a Mutex and is excluded by it. The namespace must be the same
// in every client (and SQL user) of a key, or they do not exclude each
// other.
//
// # Sessions
//
// A client's held keys share at most MaxSessions (4) dedicated
// connections; each key waited for in the server adds one while it
// waits. A key is never asked for twice on one session (the server would
// grant it again, stacked). Sessions are never handed back to a pool. No
// caller's context ever cancels a statement on a session (go-sql-driver
// would close the connection, dropping every lock on it): each statement
// has its own reply deadline (WithStatementTimeout, 5 s), past which the
// session is given up. Release returns when its context ends, and goes on
// in the background. A session found dead while idle is replaced, and the
// call runs on a new one. Sessions set wait_timeout to WithIdleTimeout
// (60 s), which bounds how long the server keeps the locks of a client
// cut off by the network.
//
// # Loss
//
// Grants do not expire. Package mutex verifies them every heartbeat
// through Renew, one statement per session (its CONNECTION_ID() and
// IS_USED_LOCK of one of its keys): a session that died (KILL, a server
// restart, a network cut) loses its leases at the next heartbeat, and
// one that stops answering within about two heartbeats and a half. The
// server frees the locks the moment the session ends, so another holder
// may already have the key when the loss is reported: guard the resource
// with fencing tokens (mutex.WithFencing; the table FencingTable is made
// on the first fenced grant).
//
// # Waiting
//
// A waiting Lock waits in the server (GET_LOCK with a timeout, on a
// session of its own): the server serves waiters in arrival order, and a
// release wakes only the first. The order has limits: a GET_LOCK that runs
// out (30 s, or a second under go-sql-driver's readTimeout) is asked
// again at the tail; waits beyond WithMaxWaiters poll and are passed over;
// and a waiter frozen or cut off when the server grants it the key holds
// the others up for its session's wait_timeout (driver.QueueHold and 3 s),
// a little longer than driver.QueueHold. WithServerWait(false) polls
// instead.
//
// # Refused setups
//
// A read-only server (a replica: ErrReadOnly) and a proxy that runs one
// session's statements on several server connections (ErrMultiplexing,
// detected by CONNECTION_ID()) are refused. Galera and group replication
// keep user-level locks per node: point every client at one node.
package mysql
