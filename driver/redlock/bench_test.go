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
	"github.com/mutexkit/mutexkit/driver/redlock"
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

// BenchmarkQueueCommands: waiters on as many clients take one key in turn
// with Lock, by the sorted-set queue (queue.go), holding it 1 or 10 ms;
// cmds/handoff is the scripts the node ran
// (EVALSHA, EVAL) per handoff. send=all turns off the client's answers to
// waiting attempts that nothing changed for (queue.go), to measure them:
// go test -run '^$' -bench QueueCommands -benchtime 2000x ./driver/redlock/
func BenchmarkQueueCommands(b *testing.B) {
	for _, hold := range []time.Duration{time.Millisecond, 10 * time.Millisecond} {
		for _, waiters := range []int{8, 32, 128} {
			for _, sendAll := range []bool{false, true} {
				b.Run(fmt.Sprintf("hold=%v/waiters=%d/send=%s", hold, waiters, map[bool]string{false: "changed", true: "all"}[sendAll]), func(b *testing.B) {
					benchQueueCommands(b, hold, waiters, sendAll)
				})
			}
		}
	}
}

func benchQueueCommands(b *testing.B, hold time.Duration, waiters int, sendAll bool) {
	c := startCluster(b, 1)
	opts := []redlock.Option{redlock.WithoutListQueue()} // the scripts' queue; the list's is BenchmarkHandoff's in bench/
	if sendAll {
		opts = append(opts, redlock.WithSendAll())
	}
	var mus []*mutex.Mutex
	for range waiters {
		conn, err := redlock.NewConnector(c.dsn(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		cl := mutex.NewClient(conn)
		b.Cleanup(func() { cl.Close() })
		mus = append(mus, cl.NewMutex("handoff", mutex.WithTTL(10*time.Second)))
	}
	ctx := context.Background()
	lockUnlock := func(m *mutex.Mutex) bool {
		l, err := m.Lock(ctx)
		if err != nil {
			b.Error(err)
			return false
		}
		time.Sleep(hold)
		if err := l.Unlock(ctx); err != nil {
			b.Error(err)
			return false
		}
		return true
	}
	var wg sync.WaitGroup
	for _, m := range mus { // subscriptions up, scripts loaded
		wg.Go(func() { lockUnlock(m) })
	}
	wg.Wait()
	if _, err := c.do(0, "CONFIG", "RESETSTAT"); err != nil {
		b.Fatal(err)
	}
	var left atomic.Int64
	left.Store(int64(b.N))
	b.ResetTimer()
	for _, m := range mus {
		wg.Go(func() {
			for left.Add(-1) >= 0 && lockUnlock(m) {
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	scripts := c.calls(b, 0, "evalsha") + c.calls(b, 0, "eval")
	b.ReportMetric(float64(scripts)/float64(b.N), "cmds/handoff")
	b.ReportMetric(float64(c.calls(b, 0, "ping"))/float64(b.N), "pings/handoff")
}
