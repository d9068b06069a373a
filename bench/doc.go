// Package bench measures mutexkit against its peers and against raw-client
// floors, side by side, against the same local servers. It is its own
// module, so that the peers (github.com/go-redsync/redsync/v4,
// github.com/bsm/redislock and their clients) never enter the library's
// dependencies.
//
// The benchmarks are ordinary Go benchmarks (uncontended_test.go,
// parallel_test.go, handoff_test.go, manykeys_test.go,
// middleware_test.go). Each starts what it needs: redis-server processes
// on free loopback ports (one set per test binary), PostgreSQL at
// MUTEXKIT_POSTGRES_DSN, MySQL or MariaDB at MUTEXKIT_MYSQL_DSN (the
// driver/mysql module, required by path). Run them once each, as make test
// does:
//
//	cd bench && go test -short -bench . -benchtime 1x ./...
//
// BenchmarkHandoff (issue 14's setup) reads what the servers did per
// handoff: the commands clients sent each Redis server, from its MONITOR
// stream (monitor_test.go), and the transactions of a database of its own
// on PostgreSQL, mutexkit_bench, made on first use (xacts_test.go), and the
// statements clients sent MySQL (its Questions counter, mysql_test.go).
// Under -short it runs 8 waiters only.
//
// goredis_test.go adds issue 15's rows to the uncontended and parallel
// benchmarks: ours through an application's go-redis client (the
// driver/redlock/goredis module, required by path), redsync over go-redis,
// and ours over Redis Clusters of 3 masters and of 1, which the test
// binary starts once each on first need (internal/testing/testserver;
// MUTEXKIT_REDIS_ADDRS plays no part) and stops when it ends. Under -short
// only the 3-master cluster runs.
//
// pgx_test.go adds issue 15's PostgreSQL row to the uncontended
// benchmark: ours through an application's pgx pool (pgxv5.FromPool, the
// driver/postgres/pgxv5 module, required by path) beside ours on lib/pq.
//
// make bench runs cmd/runbench instead, which builds the test binary,
// runs every benchmark once per round for several interleaved rounds with
// the client and the servers pinned to separate cores, and writes
// docs/BENCHMARKS.md from the medians.
//
// Environment:
//
//	MUTEXKIT_POSTGRES_DSN       PostgreSQL (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)
//	MUTEXKIT_MYSQL_DSN          MySQL or MariaDB (default mysql://root@127.0.0.1:3306/test; not pinned)
//	MUTEXKIT_REDIS_ADDRS        existing Redis servers to use (five or more) instead of starting them
//	MUTEXKIT_BENCH_SERVER_CPUS  a CPU list (taskset -c) for the servers: redis-server processes are
//	                            started on it (cluster nodes moved to it) and this process's
//	                            PostgreSQL backends moved to it
//	MUTEXKIT_REQUIRE_SERVICES=1 fail, rather than skip, when a server is unavailable
package bench
