// Package goredis lets package redlock lock through the application's own
// go-redis (github.com/redis/go-redis/v9) clients: FromClient for a
// single-instance lock, FromClients for Redlock over three or more
// independent servers. It is a module of its own, so that the core does
// not make every user download go-redis.
//
// Only the transport is go-redis's: the Locker, its scripts (EVALSHA, sent
// again as EVAL when the server lost them), the lock record, fencing, the
// wait queue and renewal are package redlock's, one code path with the
// redigo driver. So a redigo client and a go-redis client exclude each
// other on one key, and either one's Inspect (and mutexkit status) reads
// the other's holder record.
//
// The clients are the application's: the driver never closes them, and
// their options apply (pool size, timeouts, retries, TLS, credentials).
// Concurrent calls of a Locker on one node share round trips: the calls
// made while one is under way go out together as a go-redis pipeline.
// Waiters are woken through a PubSub of each client (a connection of its
// own, closed with the Locker). Errors match driver.ErrUnavailable when a
// server could not be reached and driver.ErrDenied when it refused the
// client's credentials or ACL (WRONGPASS, NOAUTH, NOPERM).
//
// A call's bound (redlock.WithNodeTimeout) reaches the network only if the
// client was made with ContextTimeoutEnabled; otherwise go-redis bounds a
// read by the client's ReadTimeout (3 s by default). A client's MaxRetries
// may send a call again after a read timed out: the acquire, release and
// renewal scripts may be repeated, but a fenced acquire repeated after a
// grant whose reply was lost takes no second token, as it recognises its
// owner's grant; on one server a Lock's queueing repeated puts its member
// twice in the list (its release takes out every copy), and a waiter's
// lease writes, repeated late, never shorten a lease. A repeated call can
// still leave a member queued or a key held for nobody until its lease
// expires: MaxRetries -1 avoids it.
//
// A *redis.ClusterClient is one node to FromClient: each key is locked on
// the master of its slot, and waiters are woken by sharded pub/sub
// (Redis 7): SPUBLISH in the key's slot, SSUBSCRIBE per key waited on,
// dialled again when the slot moves. A master's failover can lose a grant
// it had not replicated (docs/REDIS.md, "Redis Cluster"). A *redis.Ring is
// refused (ErrRing). Sentinel's
// FailoverClient is a *redis.Client, which FromClient takes; with
// redlock.WithReplicaAcks each grant and renewal waits for the replicas
// (WAIT), so that a failover keeps it, as far as WAIT goes (see
// docs/REDIS.md, "Sentinel and replica acknowledgements (WAIT)").
package goredis
