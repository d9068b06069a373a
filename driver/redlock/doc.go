// Package redlock is the Redis driver of mutexkit, through
// github.com/gomodule/redigo: a lock on one Redis server, or the Redlock
// algorithm over three or more independent servers. It registers the URL
// schemes redis and rediss (TLS); its driver name is "redis".
//
//	import (
//		"github.com/mutexkit/mutexkit/mutex"
//		_ "github.com/mutexkit/mutexkit/driver/redlock"
//	)
//
//	client, err := mutex.Open("redis://:secret@10.0.0.1:6379")  // one node: fencing tokens on request
//	client, err := mutex.Open("redis://a:6379,b:6379,c:6379")   // Redlock over 3 nodes
//	client, err := mutex.Open("rediss://redis.internal:6380/2")  // TLS, database 2
//
// DSN: redis[s]://[user:pass@]host:port[,host:port...][/db][?options], the
// options being timeout (per node, per call), connect_timeout,
// drift_factor, drift_fixed, pipeline, pool_max_idle, pool_max_active,
// pool_idle_timeout, prefix, replica_acks and replica_acks_timeout
// (WithReplicaAcks), and for rediss:// tls_ca, tls_server_name and
// tls_skip_verify. Two hosts are refused: give one, or three and more.
// NewConnector parses a DSN with Options beside it (a *tls.Config); an
// application that has redigo pools already passes them to FromPools, and
// either Connector to mutex.NewClient:
//
//	client := mutex.NewClient(redlock.FromPools([]*redis.Pool{pool}))
//
// An application with go-redis clients passes them to the module
// github.com/mutexkit/mutexkit/driver/redlock/goredis (FromClient,
// FromClients): its transport under this package's Locker, scripts, record
// and queue, which it reaches through internal/backend.
//
// With Redlock, acquiring sends one SET NX PX (with GET, Redis 7.0 on; a
// script on older servers) to every node at once; the lock is held when a quorum (N/2+1)
// granted it and the grant's validity (TTL less clock drift, counted from
// before the first send) has not run out. The lock's value is its holder
// record: the owner (128 random bits), then token, since, pid, attempt
// number and host. A failed attempt releases wherever it may have taken
// the key. An attempt fails with driver.ErrLocked when the key is held
// elsewhere on so many nodes that no quorum is left; when nodes failed
// and fewer hold it, the nodes' errors (driver.ErrUnavailable) say why.
// Release and renewal compare the record and act in one script; renewals
// of many leases go to each node in one pipelined round trip. A
// successful acquire and a release return once a quorum has answered; the
// other nodes' answers are awaited in the background, so a slow or paused
// minority does not slow them.
//
// On one server (not a Redis Cluster) the lock is a list whose head holds
// it, each member with a lease key of its own (list.go): a Lock is SET of
// its lease and RPUSH, an Unlock LREM and LINDEX, then a PUBLISH that
// wakes the new head, which holds the key without asking the server: five
// commands per handoff, no script. A TryLock is one script. With Redlock
// and on a Redis Cluster, waiters queue per key in sorted sets beside the
// lock, in arrival order (their Lock's first attempt): a release keeps the
// key for the head waiter and wakes that waiter alone (queue.go). Either
// way a waiter's place ends at its grant, its Release, its Locker's Close,
// or about QueueHold after its last attempt; see docs/REDIS.md.
//
// Calls from concurrent goroutines share round trips: each node has a
// pipelined connection (DSN option pipeline, WithPipeline) on which the
// commands queued at one time are written with one flush and their
// replies read in order by one goroutine; a call alone on its node takes
// a pooled connection instead. The pools given to FromPools are not
// pipelined.
//
// On one node a grant asked for with mutex.WithFencing carries a fencing
// token from a per-key counter bumped in the grant's script; other grants
// leave the counter alone (Token is 0). Over several nodes there is no token
// (Token is 0, and WithFencing fails with errors.ErrUnsupported): a
// majority of independent counters does not give a total order.
//
// docs/REDIS.md states what the driver guarantees and what it assumes:
// bounded clock drift, no process pause longer than the loss margin, no
// node restarted empty within a TTL, and no eviction (Ping reports a node
// whose maxmemory-policy may evict).
package redlock
