package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncgoredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/gomodule/redigo/redis"
	goredis "github.com/redis/go-redis/v9"

	mkgoredis "github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Issue 15's figures: ours through an application's go-redis client
// (impl=ours-goredis, goredis.FromClient) beside ours through redigo
// (impl=ours), redsync through go-redis (impl=redsync-goredis), and ours
// over a Redis Cluster (backend=cluster3 and cluster1). BenchmarkUncontended
// and BenchmarkParallel run them.

// Redis Cluster backends, as named in benchmark names.
const (
	cluster3 = "cluster3" // 3 masters, no replicas
	cluster1 = "cluster1" // 1 master with every slot: cluster mode without the spreading
)

// goRedisOptions are the go-redis client options every library here gets:
// the pool the others have, and ContextTimeoutEnabled, which our package
// doc asks for (the node timeout then bounds each call).
func goRedisOptions(addr string) *goredis.Options {
	return &goredis.Options{Addr: addr, PoolSize: poolSize, ContextTimeoutEnabled: true}
}

// openGoRedis opens ours over a go-redis client of the one server at
// addr, as a service that already has one would.
func openGoRedis(b testing.TB, addr string) *mutex.Client {
	b.Helper()
	rdb := goredis.NewClient(goRedisOptions(addr))
	b.Cleanup(func() { rdb.Close() }) // after the mutex client's Close (cleanups run last first)
	return pinged(b, mutex.NewClient(mkgoredis.FromClient(rdb)))
}

// newRedsyncGoRedis returns redsync over a go-redis client (its
// goredis/v9 pool) of the one server at addr.
func newRedsyncGoRedis(b testing.TB, addr string) *redsync.Redsync {
	b.Helper()
	rdb := goredis.NewClient(goRedisOptions(addr))
	b.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
	return redsync.New(redsyncgoredis.NewPool(rdb))
}

// openCluster opens ours over a *redis.ClusterClient of this process's
// cluster of masters masters, and returns the masters' addresses.
func openCluster(b *testing.B, masters int) (*mutex.Client, []string) {
	b.Helper()
	cl := startCluster(b, masters)
	cc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: cl.Addrs(), PoolSize: poolSize, ContextTimeoutEnabled: true})
	b.Cleanup(func() { cc.Close() })
	c := mutex.NewClient(mkgoredis.FromClient(cc))
	b.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		b.Fatal(err)
	}
	return c, clusterMasterAddrs(b, cl)
}

// uncontendedCluster is BenchmarkUncontended over a cluster of 3 masters:
// one key, so one master; what it adds to one node is the routing.
func uncontendedCluster(b *testing.B) {
	c, _ := openCluster(b, 3)
	uncontendedOurs(b, c)
}

// parallelCluster is BenchmarkParallel's 64 goroutines on distinct keys,
// ours over a *redis.ClusterClient of a cluster of the given masters. It
// also reports the share of the commands the busiest master ran, which
// shows the keys spread over the slots (1/masters if evenly).
func parallelCluster(masters int) func(*testing.B) {
	return func(b *testing.B) {
		if masters == 1 && testing.Short() {
			b.Skip("-short (make test's smoke run) starts one cluster only: the 3 masters")
		}
		c, addrs := openCluster(b, masters)
		before := clientCalls(b, addrs)
		parallelOurs(b, c)
		after := clientCalls(b, addrs)
		var total, busiest float64
		for i := range addrs {
			n := float64(after[i] - before[i])
			total += n
			busiest = max(busiest, n)
		}
		if total > 0 {
			b.ReportMetric(100*busiest/total, "busiest-master-%")
		}
	}
}

// pingTimeout bounds the first Ping of a cluster client (it learns the
// slots then).
const pingTimeout = 10 * time.Second

// clusters are the Redis Clusters this process started, by masters: each
// started on first need (a cluster takes 2-3 s to agree on its slots),
// shared by the benchmarks and their repeated runs, stopped by
// stopClusters when the process ends, as the plain servers are.
var clusters struct {
	mu       sync.Mutex
	started  map[int]*testserver.RedisCluster
	cleanups []func() // run last first, as testing runs them
}

// processTB lends a benchmark's testing.TB to a cluster that outlives it:
// a failure or skip while it starts is that benchmark's, while the
// servers and their directories stay until stopClusters. Its methods are
// called with clusters.mu held.
type processTB struct{ testing.TB }

func (processTB) Cleanup(f func()) { clusters.cleanups = append(clusters.cleanups, f) }

func (p processTB) TempDir() string {
	dir, err := os.MkdirTemp("", "mutexkit-bench-cluster")
	if err != nil {
		p.Fatal(err)
	}
	clusters.cleanups = append(clusters.cleanups, func() { os.RemoveAll(dir) })
	return dir
}

// startCluster returns this process's cluster of masters masters, no
// replicas, starting it on first need, its servers on
// MUTEXKIT_BENCH_SERVER_CPUS if set.
func startCluster(b *testing.B, masters int) *testserver.RedisCluster {
	b.Helper()
	clusters.mu.Lock()
	defer clusters.mu.Unlock()
	if c := clusters.started[masters]; c != nil {
		return c
	}
	c := testserver.StartRedisCluster(processTB{b}, masters, 0)
	if cpus := serverCPUs(); cpus != "" {
		for _, addr := range c.Addrs() {
			pinRedis(b, addr, cpus)
		}
	}
	if clusters.started == nil {
		clusters.started = map[int]*testserver.RedisCluster{}
	}
	clusters.started[masters] = c
	return c
}

// stopClusters stops every cluster this process started.
func stopClusters() {
	clusters.mu.Lock()
	defer clusters.mu.Unlock()
	for _, f := range slices.Backward(clusters.cleanups) {
		f()
	}
	clusters.started, clusters.cleanups = nil, nil
}

// clusterMasterAddrs returns the address of each master of c.
func clusterMasterAddrs(b *testing.B, c *testserver.RedisCluster) []string {
	var addrs []string
	for _, n := range c.Masters() {
		addrs = append(addrs, n.Addr())
	}
	return addrs
}

// pinRedis moves the redis-server at addr (every thread) to cpus.
func pinRedis(b *testing.B, addr, cpus string) {
	b.Helper()
	info, err := redisInfoField(addr, "server", "process_id")
	if err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, info).CombinedOutput(); err != nil {
		b.Fatalf("taskset %s (redis-server at %s): %v: %s", info, addr, err, out)
	}
}

// clientCalls returns the commands each server has run that a client
// sends: SET and the scripts (EVALSHA, EVAL).
func clientCalls(b *testing.B, addrs []string) []int64 {
	b.Helper()
	calls := make([]int64, len(addrs))
	for i, addr := range addrs {
		admin, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(pingTimeout), redis.DialReadTimeout(pingTimeout), redis.DialWriteTimeout(pingTimeout))
		if err != nil {
			b.Fatal(err)
		}
		calls[i] = commandCalls(b, admin, "set", "evalsha", "eval")
		admin.Close()
	}
	return calls
}

// redisInfoText returns INFO section from the server at addr.
func redisInfoText(addr, section string) (string, error) {
	conn, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(pingTimeout), redis.DialReadTimeout(pingTimeout), redis.DialWriteTimeout(pingTimeout))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return redis.String(conn.Do("INFO", section))
}

// redisInfoField returns one field of INFO section from the server at addr.
func redisInfoField(addr, section, field string) (string, error) {
	text, err := redisInfoText(addr, section)
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("INFO %s on %s has no %s", section, addr, field)
}
