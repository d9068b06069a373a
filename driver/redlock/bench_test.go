package redlock_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Speed lives here, never in tests: go test -run '^$' -bench . -benchmem.

// BenchmarkTryLockUnlock: uncontended TryLock then Unlock through mutex:
// two round trips on one node; on five, two fan-outs.
// pipeline=0 is the pooled path (one call per pooled connection).
func BenchmarkTryLockUnlock(b *testing.B) {
	for _, n := range []int{1, 5} {
		for _, pipe := range []int{1, 0} {
			b.Run(fmt.Sprintf("nodes=%d/pipeline=%d", n, pipe), func(b *testing.B) {
				benchTryLockUnlock(b, startCluster(b, n).client(fmt.Sprintf("pipeline=%d", pipe)))
			})
		}
	}
}

func benchTryLockUnlock(b *testing.B, cl *mutex.Client) {
	m := cl.NewMutex("bench", mutex.WithTTL(10*time.Second))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := m.TryLock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFloor is what no Redis lock can beat: SET NX PX, then a
// compare-and-delete script, on one pooled redigo connection.
func BenchmarkFloor(b *testing.B) {
	c := startCluster(b, 1)
	pool := &redis.Pool{MaxIdle: 4, Dial: func() (redis.Conn, error) { return redis.Dial("tcp", c.servers[0].Addr()) }}
	defer pool.Close()
	del := redis.NewScript(1, `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)
	key := c.lockKey("floor")
	b.ReportAllocs()
	for b.Loop() {
		owner := driver.NewOwner().String()
		conn := pool.Get()
		if ok, err := redis.String(conn.Do("SET", key, owner, "NX", "PX", 10000)); err != nil || ok != "OK" {
			b.Fatal(ok, err)
		}
		conn.Close()
		conn = pool.Get()
		if n, err := redis.Int(del.Do(conn, key, owner)); err != nil || n != 1 {
			b.Fatal(n, err)
		}
		conn.Close()
	}
}

// BenchmarkParallelDistinctKeys: 64 goroutines of one client lock keys of
// their own on one node: throughput. pipeline=0 is the pooled path.
func BenchmarkParallelDistinctKeys(b *testing.B) {
	for _, pipe := range []int{1, 2, 0} {
		b.Run(fmt.Sprintf("pipeline=%d", pipe), func(b *testing.B) {
			benchParallelDistinctKeys(b, startCluster(b, 1).client(fmt.Sprintf("pipeline=%d", pipe)))
		})
	}
}

func benchParallelDistinctKeys(b *testing.B, cl *mutex.Client) {
	var next atomic.Int64
	b.SetParallelism(32) // 32 x GOMAXPROCS(2) = 64 goroutines on the test machine
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		m := cl.NewMutex(fmt.Sprintf("par/%d", next.Add(1)), mutex.WithTTL(10*time.Second))
		ctx := context.Background()
		for pb.Next() {
			l, err := m.TryLock(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			if err := l.Unlock(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkContendedHandoff: 8 clients take one key in turn with Lock;
// ns/op is the time per critical section, handoff included.
func BenchmarkContendedHandoff(b *testing.B) {
	c := startCluster(b, 1)
	const clients = 8
	var mus []*mutex.Mutex
	for range clients {
		mus = append(mus, c.client().NewMutex("handoff", mutex.WithTTL(10*time.Second)))
	}
	var left atomic.Int64
	left.Store(int64(b.N))
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, m := range mus {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				l, err := m.Lock(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if err := l.Unlock(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
