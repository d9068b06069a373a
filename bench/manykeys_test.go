package bench

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

// BenchmarkManyKeys holds many keys at once in one process and measures
// what that costs while they are held: client memory per key (heap and
// goroutine stacks), server connections, and the renewal traffic that
// keeps them alive (client round trips per node, per second and per
// renewal interval; lease renewals per second the server runs). One op is
// acquiring every key, holding them for three renewal intervals, and
// releasing them.
//
// Ours renews all of a client's leases in batches, one pipelined round
// trip per node; the peers have no renewal of their own, so
// impl=redsync-watchdog is what their users write: a goroutine per lock
// calling Extend every third of the TTL. Ours' round trips are renewal
// batches seen by the servers (batches/interval/node); redsync's are
// counted on its connections (renewRT/interval/node).
func BenchmarkManyKeys(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		keys := "keys=" + strconv.Itoa(n)
		b.Run("backend="+redis1+"/"+keys+"/impl=ours", func(b *testing.B) { manyKeysOurs(b, n, redisAddrs(b, 1)) })
		b.Run("backend="+redis1+"/"+keys+"/impl=redsync-watchdog", func(b *testing.B) { manyKeysRedsync(b, n, redisAddrs(b, 1)) })
		b.Run("backend="+redis5+"/"+keys+"/impl=ours", func(b *testing.B) { manyKeysOurs(b, n, redisAddrs(b, nodesOf5)) })
		b.Run("backend="+memory+"/"+keys+"/impl=ours", func(b *testing.B) { manyKeysMem(b, n) })
	}
	b.Run("backend="+pg+"/keys=2000/impl=ours", func(b *testing.B) { manyKeysPostgres(b, 2000) })
}

// manyTTL is the lease length while many keys are held: short enough that
// a window sees several renewal intervals (a third of it each), long
// enough that a renewal of 10,000 leases fits in ours' per-node timeout of
// a tenth of it on a busy 2-core machine.
const manyTTL = 3 * time.Second

// windowIntervals is how many renewal intervals the keys are held and
// their traffic counted; under -short (the smoke run of make test) only a
// quarter of one, which exercises the code but counts nothing useful.
func windowIntervals() float64 {
	if testing.Short() {
		return 0.25
	}
	return 2
}

// holdWindow is how long the keys are held where no traffic is counted.
func holdWindow() time.Duration {
	return time.Duration(windowIntervals() * float64(renewInterval()))
}

// renewInterval is how often ours renews a lease of manyTTL on Redis: a
// third of its validity, the TTL less the default drift.
func renewInterval() time.Duration {
	ttl := manyTTL
	validity := ttl - time.Duration(float64(ttl)*redlock.DefaultDriftFactor) - redlock.DefaultDriftFixed
	return validity / 3
}

// acquireWorkers is how many goroutines take the keys: enough that 10,000
// keys are taken in a fraction of a renewal interval.
const acquireWorkers = 32

// acquireAll calls take for keys 0..n-1 from acquireWorkers goroutines.
// A failed take is tried again, up to acquireTries times in all, as an
// application would (a busy server may time out); the retries are
// reported (acquire-retries), and a key still not taken fails b.
func acquireAll(b *testing.B, n int, take func(i int) error) {
	start := time.Now()
	var next, retries atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, acquireWorkers)
	for w := range acquireWorkers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n) && errs[w] == nil; i = next.Add(1) - 1 {
				for try := 1; ; try++ {
					errs[w] = take(int(i))
					if errs[w] == nil || try == acquireTries {
						break
					}
					retries.Add(1)
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatalf("after %d tries: %v", acquireTries, err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "acquire-ms")
	b.ReportMetric(float64(retries.Load()), "acquire-retries")
}

// acquireTries bounds the attempts at each key.
const acquireTries = 5

// memUse is the heap in use plus goroutine stacks, after a collection.
func memUse() (bytes uint64, goroutines int) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse, runtime.NumGoroutine()
}

// memReport reports the memory and goroutines the held keys cost.
func memReport(b *testing.B, n int, before uint64, goroutinesBefore int) {
	after, goroutines := memUse()
	b.ReportMetric(float64(int64(after)-int64(before))/float64(n), "mem-B/key")
	b.ReportMetric(float64(goroutines-goroutinesBefore), "goroutines")
}

// manyKeysOurs opens ours from a DSN, as users do (its calls are then
// pipelined over one connection per node), so its round trips are
// counted on the servers: renewal batches, told apart by the quiet between
// them.
func manyKeysOurs(b *testing.B, n int, addrs []string) {
	ctx := context.Background()
	for range b.N {
		nodes := watchNodes(b, addrs, nil)
		before, g0 := memUse()
		c, err := mutex.Open("redis://" + strings.Join(addrs, ","))
		if err != nil {
			b.Fatal(err)
		}
		leases := make([]*mutex.Lease, n)
		acquireAll(b, n, func(i int) error {
			var err error
			leases[i], err = c.NewMutex(fmt.Sprintf("%s/%d", keyFor(b), i), mutex.WithTTL(manyTTL)).TryLock(ctx)
			return err
		})
		memReport(b, n, before, g0)
		nodes.window(b)
		reportLost(b, leases)
		c.Close() // releases every key, pipelined; lost ones are reported above
		nodes.close()
	}
}

func manyKeysRedsync(b *testing.B, n int, addrs []string) {
	ctx := context.Background()
	for range b.N {
		rt := &rtCounter{}
		var pools []*redis.Pool
		for _, a := range addrs {
			pools = append(pools, countingPool(a, rt))
		}
		nodes := watchNodes(b, addrs, rt)
		before, g0 := memUse()
		rs := redsyncOver(pools)
		ms := make([]*redsync.Mutex, n)
		acquireAll(b, n, func(i int) error {
			ms[i] = rs.NewMutex(fmt.Sprintf("%s/%d", keyFor(b), i), redsync.WithExpiry(manyTTL))
			return ms[i].TryLockContext(ctx)
		})
		wctx, stop := context.WithCancel(ctx)
		var lost atomic.Int64
		var wg sync.WaitGroup
		for _, m := range ms {
			wg.Go(func() {
				t := time.NewTicker(renewInterval())
				defer t.Stop()
				for {
					select {
					case <-wctx.Done():
						return
					case <-t.C:
						if ok, _ := m.ExtendContext(wctx); !ok && wctx.Err() == nil {
							lost.Add(1)
						}
					}
				}
			})
		}
		memReport(b, n, before, g0)
		nodes.window(b)
		stop()
		wg.Wait()
		b.ReportMetric(float64(lost.Load()), "lost")
		for _, m := range ms {
			m.UnlockContext(ctx)
		}
		for _, p := range pools {
			p.Close()
		}
		nodes.close()
	}
}

func manyKeysMem(b *testing.B, n int) {
	ctx := context.Background()
	for range b.N {
		before, g0 := memUse()
		c, err := mutex.Open("mem://" + b.Name())
		if err != nil {
			b.Fatal(err)
		}
		leases := make([]*mutex.Lease, n)
		acquireAll(b, n, func(i int) error {
			var err error
			leases[i], err = c.NewMutex(fmt.Sprintf("%s/%d", keyFor(b), i), mutex.WithTTL(manyTTL)).TryLock(ctx)
			return err
		})
		memReport(b, n, before, g0)
		time.Sleep(holdWindow())
		reportLost(b, leases)
		c.Close()
	}
}

func manyKeysPostgres(b *testing.B, n int) {
	ctx := context.Background()
	dsn := postgresDSN(b)
	for range b.N {
		waitNoBackends(b, dsn)
		before, g0 := memUse()
		conn, err := postgres.NewConnector(dsn, postgres.WithNamespace(b.Name()))
		if err != nil {
			b.Fatal(err)
		}
		c := mutex.NewClient(conn)
		leases := make([]*mutex.Lease, n)
		acquireAll(b, n, func(i int) error {
			var err error
			leases[i], err = c.NewMutex(fmt.Sprintf("%s/%d", keyFor(b), i)).TryLock(ctx)
			return err
		})
		memReport(b, n, before, g0)
		time.Sleep(holdWindow()) // heartbeats run meanwhile
		b.ReportMetric(float64(len(postgresBackends(b, dsn))), "conns")
		reportLost(b, leases)
		c.Close()
	}
}

// reportLost reports how many leases were lost while held: none, unless
// renewals (or sessions) failed.
func reportLost(b *testing.B, leases []*mutex.Lease) {
	lost := 0
	var first error
	for _, l := range leases {
		if err := l.Err(); err != nil {
			lost++
			first = cmp.Or(first, err)
		}
	}
	if first != nil {
		b.Logf("%d of %d leases lost while held, the first: %v", lost, len(leases), first)
	}
	b.ReportMetric(float64(lost), "lost")
}

// waitNoBackends waits (a little) for backends of this process that an
// earlier benchmark closed to go away, so that they are not counted.
func waitNoBackends(b *testing.B, dsn string) {
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if len(postgresBackends(b, dsn)) == 0 {
			return
		}
	}
}

// watchedNodes are the Redis nodes a ManyKeys benchmark measures: an
// admin connection each for INFO, and the counter of the client's own
// connections where it has one.
type watchedNodes struct {
	addrs []string
	admin []redis.Conn
	rt    *rtCounter // nil: the client's connections are not ours to count
}

func watchNodes(b *testing.B, addrs []string, rt *rtCounter) *watchedNodes {
	wn := &watchedNodes{addrs: addrs, rt: rt}
	for _, addr := range addrs {
		admin, err := redis.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		wn.admin = append(wn.admin, admin)
	}
	return wn
}

func (wn *watchedNodes) close() {
	for _, a := range wn.admin {
		a.Close()
	}
}

// scripts returns the scripts each node has run.
func (wn *watchedNodes) scripts(b *testing.B) []int64 {
	n := make([]int64, len(wn.addrs))
	for i, a := range wn.admin {
		n[i] = scriptCalls(b, a)
	}
	return n
}

// window measures windowIntervals renewal intervals with nothing but
// renewals going on, and reports per node: renewal batches per interval
// (runs of scripts on the server set apart by a quiet of a quarter
// interval, polled every few milliseconds), renewals per second, open
// connections and, where the client's connections are counted, its round
// trips per interval. It starts in the quiet just after a batch, so that
// renewing once per interval counts once per interval.
func (wn *watchedNodes) window(b *testing.B) {
	interval := renewInterval()
	quiet := interval / 4
	const tick = 5 * time.Millisecond
	if !testing.Short() { // align: wait for a batch on the first node, then for its end
		first := scriptCalls(b, wn.admin[0])
		last, seen := time.Now(), false
		for deadline := time.Now().Add(3 * interval); time.Now().Before(deadline); time.Sleep(tick) {
			if n := scriptCalls(b, wn.admin[0]); n != first {
				first, last, seen = n, time.Now(), true
			} else if seen && time.Since(last) >= quiet {
				break
			}
		}
	}
	k := windowIntervals()
	var rtStart int64
	if wn.rt != nil {
		rtStart, _ = wn.rt.snapshot()
	}
	start := wn.scripts(b)
	prev := slices.Clone(start)
	lastRise := make([]time.Time, len(wn.addrs))
	batches := make([]int, len(wn.addrs))
	t0 := time.Now()
	for end := t0.Add(holdWindow()); time.Now().Before(end); time.Sleep(tick) {
		now := time.Now()
		for i, n := range wn.scripts(b) {
			if n != prev[i] {
				if lastRise[i].IsZero() || now.Sub(lastRise[i]) >= quiet {
					batches[i]++
				}
				lastRise[i], prev[i] = now, n
			}
		}
	}
	secs := time.Since(t0).Seconds()
	endScripts := wn.scripts(b)
	nodes := float64(len(wn.addrs))
	var scripts, conns float64
	for i := range wn.addrs {
		scripts += float64(endScripts[i] - start[i])
		conns += float64(clientCount(b, wn.admin[i]) - 1) // less the admin connection
	}
	total := 0
	for _, n := range batches {
		total += n
	}
	if wn.rt != nil {
		rts, _ := wn.rt.snapshot()
		b.ReportMetric(float64(rts-rtStart)/nodes/k, "renewRT/interval/node")
	} else {
		b.ReportMetric(float64(total)/nodes/k, "batches/interval/node")
	}
	b.ReportMetric(scripts/nodes/secs, "renewals/s/node")
	b.ReportMetric(conns/nodes, "conns/node")
}
