package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"

	"github.com/mutexkit/mutexkit/mutex"
)

// holdTime is how long each holder keeps the key: a short critical
// section, as in issue 14's measurements.
const holdTime = time.Millisecond

// waitersAxis is how many clients BenchmarkHandoff sets on one key: issue
// 14's 8, 32 and 128, those up to most; under -short (make test's smoke
// run) only the smallest.
func waitersAxis(most int) []int {
	if testing.Short() {
		return []int{8}
	}
	var ns []int
	for _, n := range []int{8, 32, 128} {
		if n <= most {
			ns = append(ns, n)
		}
	}
	return ns
}

// postgresWaitersMax is the most clients the PostgreSQL handoff opens:
// each holds two or more server connections (a lock session, a waiter
// session), and the server here allows 100 (max_connections), shared with
// other tests.
const postgresWaitersMax = 32

// mysqlWaitersMax is the most clients the MySQL handoff opens: each holds
// a lock session and a waiter session or more, and the server here allows
// 151 (max_connections), shared with other tests.
const mysqlWaitersMax = 32

// xactsFrom is the fewest handoffs for which PostgreSQL's transactions are
// counted: each count waits pgStatIdleFlush for the server's statistics,
// which the one-handoff runs (go test's first run of every benchmark, and
// make test's smoke run) should not.
const xactsFrom = 100

// BenchmarkHandoff is N clients (waiters=N; each with connections of its
// own, as N processes would have) on one key. Each, once it holds the key,
// keeps it for holdTime, releases it and asks again at once, so N-1 are
// always waiting. One op is one grant. It reports the median and 99th
// percentile time from the start of a release to the next Lock returning
// (p50-us, p99-us), handoffs per second, what the servers did per handoff
// (cmds/handoff: the commands the clients sent, summed over the nodes;
// xacts/handoff on PostgreSQL, stmts/handoff on MySQL), and the longest wait in handoffs passed
// over (passed-max): for each Lock, the grants to others between its call
// and its return beyond the N-1 that arrival order allows, the most over
// all Locks; and the share of grants that went back to the client that
// had just released (regrants-%: 0 in arrival order, as the releaser is
// last in line).
func BenchmarkHandoff(b *testing.B) {
	byWaiters := func(b *testing.B, most int, impls func(b *testing.B, n int)) {
		for _, n := range waitersAxis(most) {
			b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) { impls(b, n) })
		}
	}
	b.Run("backend="+redis1, func(b *testing.B) {
		byWaiters(b, 128, func(b *testing.B, n int) {
			b.Run("impl=ours", func(b *testing.B) { handoffOurs(b, redis1, n, askAgain) })
			b.Run("impl=redsync-default", func(b *testing.B) { handoffRedsync(b, 1, n, askAgain, redsyncExpiry) })
			b.Run("impl=redsync-1to5ms", func(b *testing.B) { handoffRedsync(b, 1, n, askAgain, redsyncShortRetry()...) })
		})
	})
	b.Run("backend="+redis5, func(b *testing.B) {
		byWaiters(b, 128, func(b *testing.B, n int) {
			b.Run("impl=ours", func(b *testing.B) { handoffOurs(b, redis5, n, askAgain) })
			b.Run("impl=redsync-1to5ms", func(b *testing.B) { handoffRedsync(b, nodesOf5, n, askAgain, redsyncShortRetry()...) })
		})
	})
	b.Run("backend="+pg, func(b *testing.B) {
		byWaiters(b, postgresWaitersMax, func(b *testing.B, n int) {
			b.Run("impl=ours", func(b *testing.B) { handoffOurs(b, pg, n, askAgain) })
		})
	})
	b.Run("backend="+mysqlBackend, func(b *testing.B) {
		byWaiters(b, mysqlWaitersMax, func(b *testing.B, n int) {
			b.Run("impl=ours", func(b *testing.B) { handoffOurs(b, mysqlBackend, n, askAgain) })
		})
	})
	b.Run("backend="+memory, func(b *testing.B) {
		byWaiters(b, 128, func(b *testing.B, n int) {
			b.Run("impl=ours", func(b *testing.B) { handoffOurs(b, memory, n, askAgain) })
		})
	})
}

// passClients is how many clients BenchmarkPass sets on one key.
const passClients = 8

// BenchmarkPass is issue 8's handoff: passClients clients on one key (one
// Redis node), each, once it holds the key, keeping it for holdTime,
// releasing it and asking again only once another client took it, so that
// every grant goes to a client that was waiting and none back to the one
// that released (which BenchmarkHandoff's setup lets redsync do). It
// reports what BenchmarkHandoff does; p50-us is what a waiting client
// waits once the key is free.
func BenchmarkPass(b *testing.B) {
	b.Run("backend="+redis1, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { handoffOurs(b, redis1, passClients, passOn) })
		b.Run("impl=redsync-default", func(b *testing.B) { handoffRedsync(b, 1, passClients, passOn, redsyncExpiry) })
	})
}

// redsyncShortRetry is redsync polling every 1-5 ms, jittered so that
// waiters do not retry in step, with no limit on tries.
func redsyncShortRetry() []redsync.Option {
	return []redsync.Option{redsyncExpiry, redsync.WithTries(1 << 30), redsync.WithRetryDelayFunc(func(int) time.Duration {
		return time.Millisecond + rand.N(4*time.Millisecond)
	})}
}

// lockFunc waits until its client holds the key, and returns how to
// release it.
type lockFunc func(ctx context.Context) (unlock func(context.Context) error, err error)

// serverMeter measures what the servers did while the clients ran.
type serverMeter struct {
	start func() // after the warm-up
	end   func() // at the last handoff, or nil
	// report reports the figures per handoff, once every client stopped.
	report func(handoffs int)
}

// redisMeter counts the commands the clients send the first nodes servers
// (cmds/handoff), those their scripts run (script-cmds/handoff), and of
// those sent, what the clients send by the clock rather than per handoff
// (upkeep-cmds/handoff: subscriptions' pings).
func redisMeter(b *testing.B, nodes int) *serverMeter {
	m := monitorCommands(b, redisAddrs(b, nodes))
	return &serverMeter{
		start: func() { m.mark(b, meterStart) },
		end:   func() { m.mark(b, meterEnd) },
		report: func(handoffs int) {
			sent, scripted, upkeep := m.total(b)
			b.ReportMetric(float64(sent)/float64(handoffs), "cmds/handoff")
			b.ReportMetric(float64(scripted)/float64(handoffs), "script-cmds/handoff")
			b.ReportMetric(float64(upkeep)/float64(handoffs), "upkeep-cmds/handoff")
		},
	}
}

// askAgain and passOn are how a releaser goes on (runHandoff): it asks
// again at once (issue 14's setup), or only once another client took the
// key (issue 8's: every grant a handoff to a client that was waiting).
const (
	askAgain = false
	passOn   = true
)

func handoffOurs(b *testing.B, backend string, n int, pass bool) {
	clients := make([]*mutex.Client, n)
	var dsn string
	var mysqlAdmin *sql.DB
	switch backend {
	case pg:
		dsn = benchDatabaseDSN(b)
	case mysqlBackend:
		dsn, mysqlAdmin = mysqlDSN(b)
	}
	for i := range clients {
		switch backend {
		case pg:
			clients[i] = openOursPostgres(b, dsn)
		case mysqlBackend:
			clients[i] = openOursMySQL(b, dsn)
		default:
			clients[i] = openOurs(b, backend)
		}
	}
	locks := make([]lockFunc, n)
	for i, c := range clients {
		m := c.NewMutex(keyFor(b))
		locks[i] = func(ctx context.Context) (func(context.Context) error, error) {
			lease, err := m.Lock(ctx)
			if err != nil {
				return nil, err
			}
			return lease.Unlock, nil
		}
	}
	var meter *serverMeter
	switch {
	case backend == mysqlBackend:
		meter = questionsMeter(b, mysqlAdmin)
	case backend == redis1:
		meter = redisMeter(b, 1)
	case backend == redis5:
		meter = redisMeter(b, nodesOf5)
	case backend == pg && b.N >= xactsFrom:
		xm := countXacts(b)
		meter = &serverMeter{
			start: func() { xm.start(b) },
			report: func(handoffs int) {
				for _, c := range clients { // a backend reports its last counts as it exits
					c.Close()
				}
				b.ReportMetric(float64(xm.total(b))/float64(handoffs), "xacts/handoff")
			},
		}
	}
	runHandoff(b, meter, locks, pass)
}

func handoffRedsync(b *testing.B, nodes, n int, pass bool, opts ...redsync.Option) {
	locks := make([]lockFunc, n)
	for i := range locks {
		m := newRedsync(b, redisAddrs(b, nodes)).NewMutex(keyFor(b), opts...)
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
	runHandoff(b, redisMeter(b, nodes), locks, pass)
}

// warmUp has holder take the key, and then waiters ask for it, each
// keeping it for holdTime once it has it. holder lets go after a pause
// that queues them behind it (the pause is no condition: a waiter that
// asks only later takes the key all the same).
func warmUp(holder lockFunc, waiters []lockFunc) error {
	ctx := context.Background()
	unlock, err := holder(ctx)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(waiters))
	for i, lock := range waiters {
		wg.Go(func() {
			unlock, err := lock(ctx)
			if err == nil {
				time.Sleep(holdTime)
				err = unlock(ctx)
			}
			errs[i] = err
		})
	}
	time.Sleep(100 * time.Millisecond)
	err = unlock(ctx)
	wg.Wait()
	return errors.Join(append(errs, err)...)
}

// runHandoff runs the clients until b.N grants, checking on the way that
// no two ever hold the key at once, and reports the figures (see
// BenchmarkHandoff); meter, if not nil, measures the servers' work. With
// pass (passOn), a releaser asks again only once another client took the
// key.
func runHandoff(b *testing.B, meter *serverMeter, locks []lockFunc, pass bool) {
	// Warm up, so that connections, sessions and subscriptions exist
	// before the clock starts, those a contended Lock uses too
	// (PostgreSQL's and MySQL's waiter sessions: without them, the first
	// handoffs of a round wait for connections to be dialled, which
	// measures the dials and lets the others pass over the dialling
	// client). Every client waits once: the others queue behind client 0,
	// then client 0 behind client 1.
	if err := warmUp(locks[0], locks[1:]); err != nil {
		b.Fatal(err)
	}
	if err := warmUp(locks[1], locks[:1]); err != nil {
		b.Fatal(err)
	}
	pinPostgresIf(b)
	// The meter counts from the grant by which every client has asked
	// once (the ramp: N first Locks queueing at once, which a steady turn
	// taking does not repeat) to the last grant, when there are enough.
	var ramp int64
	if b.N > 2*len(locks) {
		ramp = int64(len(locks))
	}
	if meter != nil && ramp == 0 {
		meter.start()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		last        = int64(b.N)
		fifo        = int64(len(locks) - 1) // grants arrival order lets pass before a new Lock
		base        = time.Now()
		held        atomic.Bool  // someone holds the key: a second holder is a bug
		lastRelease atomic.Int64 // ns after base when the last release started; 0: none yet
		grants      atomic.Int64
		elapsed     time.Duration // base to the last grant

		mu       sync.Mutex
		passed   int64                 // the most grants a Lock saw beyond fifo
		holder   = -1                  // the client that held the key last
		regrants int64                 // grants to the client that held it last
		taken    = make(chan struct{}) // closed and replaced at every grant
		samples  = make([]time.Duration, 0, b.N)
		errs     []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		cancel()
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, lock := range locks {
		wg.Go(func() {
			for ctx.Err() == nil {
				seen := grants.Load()
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
				if n <= last {
					passed = max(passed, n-1-seen-fifo)
					if holder == i {
						regrants++
					}
					holder = i
					if l := lastRelease.Load(); l != 0 {
						samples = append(samples, now-time.Duration(l))
					}
				}
				close(taken)
				taken = make(chan struct{})
				next := taken
				mu.Unlock()
				if n == ramp && meter != nil {
					meter.start()
				}
				if n == last {
					elapsed = now
					if meter != nil && meter.end != nil {
						meter.end()
					}
				}
				time.Sleep(holdTime)
				held.Store(false)
				lastRelease.Store(int64(time.Since(base)))
				if err := unlock(context.WithoutCancel(ctx)); err != nil {
					fail(fmt.Errorf("unlock: %w", err))
					return
				}
				if n >= last {
					cancel()
					return
				}
				if pass {
					select { // let another client have it
					case <-next:
					case <-ctx.Done():
					}
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	if b.Failed() { // a meter's mark failed
		b.FailNow()
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "handoffs/s")
	b.ReportMetric(float64(passed), "passed-max")
	b.ReportMetric(100*float64(regrants)/float64(b.N), "regrants-%")
	if meter != nil {
		meter.report(b.N - int(ramp))
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
