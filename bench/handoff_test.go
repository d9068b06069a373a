package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/gomodule/redigo/redis"
)

// contenders is how many clients BenchmarkHandoff sets on one key.
const contenders = 8

// holdTime is how long each holder keeps the key: a short critical
// section, long enough that the client that held it before has made its
// first attempt and is waiting again by the time it is released. (Without
// it, that first attempt races the release, and the two clients pass the
// key back and forth by luck of timing, never through a wait.)
const holdTime = time.Millisecond

// BenchmarkHandoff is 8 clients (each with connections of its own, as 8
// processes would have) waiting on one key. Each, once it holds the key,
// keeps it for holdTime and releases it, and asks again only once another
// client has taken it, so every grant is a handoff from one client to
// another, to a client that was waiting. One op is one handoff. It reports
// the median and 99th percentile time from the start of the release to
// the next holder's Lock returning (p50-us, p99-us), and handoffs per
// second.
func BenchmarkHandoff(b *testing.B) {
	b.Run("backend="+redis1, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { handoffOurs(b, redis1) })
		b.Run("impl=redsync-default", func(b *testing.B) {
			handoffRedsync(b, redsyncExpiry)
		})
		b.Run("impl=redsync-1to5ms", func(b *testing.B) {
			handoffRedsync(b, redsyncExpiry, redsync.WithTries(1<<30), redsync.WithRetryDelayFunc(func(int) time.Duration {
				return time.Millisecond + rand.N(4*time.Millisecond) // jittered, so waiters do not retry in step
			}))
		})
	})
	b.Run("backend="+pg, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { handoffOurs(b, pg) })
	})
	b.Run("backend="+memory, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { handoffOurs(b, memory) })
	})
}

// lockFunc waits until its client holds the key, and returns how to
// release it.
type lockFunc func(ctx context.Context) (unlock func(context.Context) error, err error)

func handoffOurs(b *testing.B, backend string) {
	locks := make([]lockFunc, contenders)
	for i := range locks {
		m := openOurs(b, backend).NewMutex(keyFor(b))
		locks[i] = func(ctx context.Context) (func(context.Context) error, error) {
			lease, err := m.Lock(ctx)
			if err != nil {
				return nil, err
			}
			return lease.Unlock, nil
		}
	}
	var count func() int64
	if backend == redis1 { // what ours sends: scripts and subscriptions
		count = commandCounter(b, "evalsha", "eval", "subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ping")
	}
	runHandoff(b, count, locks)
}

// commandCounter counts the named commands on the Redis server of redis1.
func commandCounter(b *testing.B, names ...string) func() int64 {
	admin, err := redis.Dial("tcp", redisAddrs(b, 1)[0])
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { admin.Close() })
	return func() int64 { return commandCalls(b, admin, names...) }
}

func handoffRedsync(b *testing.B, opts ...redsync.Option) {
	locks := make([]lockFunc, contenders)
	for i := range locks {
		m := newRedsync(b, redisAddrs(b, 1)).NewMutex(keyFor(b), opts...)
		locks[i] = func(ctx context.Context) (func(context.Context) error, error) {
			for {
				err := m.LockContext(ctx)
				switch {
				case err == nil:
					return func(ctx context.Context) error {
						if ok, err := m.UnlockContext(ctx); !ok {
							return fmt.Errorf("redsync unlock: %v", err)
						}
						return nil
					}, nil
				case ctx.Err() != nil:
					return nil, ctx.Err()
				case errors.Is(err, redsync.ErrFailed), errors.As(err, new(*redsync.ErrTaken)):
					continue // out of tries: a user would call Lock again
				default:
					return nil, err
				}
			}
		}
	}
	runHandoff(b, commandCounter(b, "set", "evalsha", "eval"), locks) // SET NX, and its scripts
}

// runHandoff runs the clients until b.N handoffs, checking on the way that
// no two ever hold the key at once. Given a count of the commands the
// clients send to the server, it also reports them per handoff
// (cmds/handoff): what waiting costs, polling or not.
func runHandoff(b *testing.B, count func() int64, locks []lockFunc) {
	// Warm up: each client takes the key once, so that connections,
	// sessions and subscriptions exist before the clock starts.
	for _, lock := range locks {
		unlock, err := lock(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if err := unlock(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	pinPostgresIf(b)
	var countBefore int64
	if count != nil {
		countBefore = count()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		base        = time.Now()
		held        atomic.Bool  // someone holds the key: a second holder is a bug
		lastRelease atomic.Int64 // ns after base when the last release started; 0: none yet
		grants      atomic.Int64

		mu      sync.Mutex
		taken   = make(chan struct{}) // closed and replaced at every grant
		samples = make([]time.Duration, 0, b.N)
		errs    []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		cancel()
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, lock := range locks {
		wg.Go(func() {
			for ctx.Err() == nil {
				unlock, err := lock(ctx)
				if err != nil {
					if ctx.Err() == nil {
						fail(err)
					}
					return
				}
				now := time.Since(base)
				if held.Swap(true) {
					fail(errors.New("two clients hold the key at once"))
				}
				n := grants.Add(1)
				mu.Lock()
				if last := lastRelease.Load(); last != 0 && n <= int64(b.N) {
					samples = append(samples, now-time.Duration(last))
				}
				close(taken)
				taken = make(chan struct{})
				next := taken
				mu.Unlock()

				time.Sleep(holdTime)
				held.Store(false)
				lastRelease.Store(int64(time.Since(base)))
				if err := unlock(context.WithoutCancel(ctx)); err != nil {
					fail(fmt.Errorf("unlock: %w", err))
					return
				}
				if n >= int64(b.N) {
					cancel()
					return
				}
				select { // let another client have it
				case <-next:
				case <-ctx.Done():
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(base)
	b.StopTimer()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "handoffs/s")
	if count != nil {
		b.ReportMetric(float64(count()-countBefore)/float64(b.N), "cmds/handoff")
	}
	if len(samples) > 0 {
		slices.Sort(samples)
		b.ReportMetric(float64(percentile(samples, 50))/1e3, "p50-us")
		b.ReportMetric(float64(percentile(samples, 99))/1e3, "p99-us")
	}
}

// percentile returns the p-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}
