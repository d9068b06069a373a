package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/mutex"
)

// workers is how many goroutines BenchmarkParallel runs, each on a key of
// its own.
const workers = 64

// BenchmarkParallel is 64 goroutines of one process, each taking and
// giving back a key of its own (TryLock+Unlock) as fast as it can: the
// throughput of one client under load. One op is one TryLock+Unlock.
func BenchmarkParallel(b *testing.B) {
	b.Run("backend="+redis1, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { parallelOurs(b, openOurs(b, redis1)) })
		b.Run("impl=ours-goredis", func(b *testing.B) { parallelOurs(b, openGoRedis(b, redisAddrs(b, 1)[0])) })
		b.Run("impl=redsync", func(b *testing.B) { parallelRedsync(b, redisAddrs(b, 1)) })
		b.Run("impl=redsync-goredis", func(b *testing.B) { parallelRedsyncOn(b, newRedsyncGoRedis(b, redisAddrs(b, 1)[0])) })
		b.Run("impl=redislock", parallelRedislock)
		b.Run("impl=floor", parallelRedisFloor)
	})
	b.Run("backend="+redis5, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { parallelOurs(b, openOurs(b, redis5)) })
		b.Run("impl=redsync", func(b *testing.B) { parallelRedsync(b, redisAddrs(b, nodesOf5)) })
	})
	b.Run("backend="+cluster3, func(b *testing.B) { b.Run("impl=ours-goredis", parallelCluster(3)) })
	b.Run("backend="+cluster1, func(b *testing.B) { b.Run("impl=ours-goredis", parallelCluster(1)) })
	b.Run("backend="+pg, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { parallelOurs(b, openOurs(b, pg)) })
	})
	b.Run("backend="+memory, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { parallelOurs(b, openOurs(b, memory)) })
	})
}

// runParallel runs b.N calls of op spread over the workers, worker w
// always passing w, and reports the throughput.
func runParallel(b *testing.B, op func(ctx context.Context, w int) error) {
	ctx := context.Background()
	for w := range workers { // warm up: connections, sessions, scripts
		if err := op(ctx, w); err != nil {
			b.Fatal(err)
		}
	}
	pinPostgresIf(b)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) && failed.Load() == nil {
				if err := op(ctx, w); err != nil {
					failed.Store(&err)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
}

func workerKey(b *testing.B, w int) string { return fmt.Sprintf("%s/%d", keyFor(b), w) }

func parallelOurs(b *testing.B, c *mutex.Client) {
	ms := make([]*mutex.Mutex, workers)
	for w := range ms {
		ms[w] = c.NewMutex(workerKey(b, w))
	}
	runParallel(b, func(ctx context.Context, w int) error {
		lease, err := ms[w].TryLock(ctx)
		if err != nil {
			return err
		}
		return lease.Unlock(ctx)
	})
}

func parallelRedsync(b *testing.B, addrs []string) { parallelRedsyncOn(b, newRedsync(b, addrs)) }

func parallelRedsyncOn(b *testing.B, rs *redsync.Redsync) {
	ms := make([]*redsync.Mutex, workers)
	for w := range ms {
		ms[w] = rs.NewMutex(workerKey(b, w), redsyncExpiry)
	}
	runParallel(b, func(ctx context.Context, w int) error {
		if err := ms[w].TryLockContext(ctx); err != nil {
			return err
		}
		if ok, err := ms[w].UnlockContext(ctx); !ok {
			return fmt.Errorf("unlock: %v", err)
		}
		return nil
	})
}

func parallelRedislock(b *testing.B) {
	c := newRedislock(b, redisAddrs(b, 1)[0])
	keys := make([]string, workers)
	for w := range keys {
		keys[w] = workerKey(b, w)
	}
	runParallel(b, func(ctx context.Context, w int) error {
		lock, err := c.Obtain(ctx, keys[w], ttl, (*redislock.Options)(nil))
		if err != nil {
			return err
		}
		return lock.Release(ctx)
	})
}

// parallelRedisFloor gives each worker one connection of its own, taken
// from the pool once.
func parallelRedisFloor(b *testing.B) {
	pool := redigoPool(b, redisAddrs(b, 1)[0])
	conns := make([]redis.Conn, workers)
	keys := make([]string, workers)
	for w := range conns {
		conns[w], keys[w] = pool.Get(), workerKey(b, w)
		defer conns[w].Close()
	}
	if err := floorRelease.Load(conns[0]); err != nil {
		b.Fatal(err)
	}
	owner, ttlMs, sha := "0123456789abcdef0123456789abcdef", ttl.Milliseconds(), floorRelease.Hash()
	runParallel(b, func(ctx context.Context, w int) error {
		if ok, err := redis.String(conns[w].Do("SET", keys[w], owner, "NX", "PX", ttlMs)); ok != "OK" {
			return fmt.Errorf("SET NX: %q %v", ok, err)
		}
		if n, err := redis.Int(conns[w].Do("EVALSHA", sha, 1, keys[w], owner)); n != 1 {
			return fmt.Errorf("release: %d %v", n, err)
		}
		return nil
	})
}
