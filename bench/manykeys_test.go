package bench

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
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
// calling Extend every third of the TTL.
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
func acquireAll(b *testing.B, n int, take func(i int) error) {
	start := time.Now()
	defer func() { b.ReportMetric(float64(time.Since(start).Milliseconds()), "acquire-ms") }()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, acquireWorkers)
	for w := range acquireWorkers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n) && errs[w] == nil; i = next.Add(1) - 1 {
				errs[w] = take(int(i))
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
}

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

func manyKeysOurs(b *testing.B, n int, addrs []string) {
	ctx := context.Background()
	for range b.N {
		nodes := countNodes(b, addrs)
		before, g0 := memUse()
		conn, err := redlock.NewConnector(nodes.pools())
		if err != nil {
			b.Fatal(err)
		}
		c := mutex.OpenConnector(conn)
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
		nodes := countNodes(b, addrs)
		before, g0 := memUse()
		rs := redsyncOver(nodes.pools())
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
		nodes.close()
	}
}

func manyKeysMem(b *testing.B, n int) {
	ctx := context.Background()
	for range b.N {
		before, g0 := memUse()
		c, err := mutex.Open("mem", b.Name())
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
		c := mutex.OpenConnector(conn)
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

// countedNodes are Redis nodes reached through pools whose connections
// count round trips (each Do, and each Flush of a pipeline), with an
// uncounted admin connection each for INFO.
type countedNodes struct {
	addrs []string
	rts   []*rtCounter
	pls   []*redis.Pool
	admin []redis.Conn
}

func countNodes(b *testing.B, addrs []string) *countedNodes {
	cn := &countedNodes{addrs: addrs}
	for _, addr := range addrs {
		rt := &rtCounter{}
		cn.rts = append(cn.rts, rt)
		cn.pls = append(cn.pls, countingPool(addr, rt))
		admin, err := redis.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		cn.admin = append(cn.admin, admin)
	}
	return cn
}

// countingPool is a pool like the peers' whose connections count their
// round trips in rt.
func countingPool(addr string, rt *rtCounter) *redis.Pool {
	return &redis.Pool{
		MaxIdle:     poolSize,
		MaxActive:   poolSize,
		Wait:        true,
		IdleTimeout: 5 * time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			c, err := redis.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return rt.wrap(c), nil
		},
	}
}

func (cn *countedNodes) pools() []*redis.Pool { return cn.pls }

func (cn *countedNodes) close() {
	for i := range cn.pls {
		cn.pls[i].Close()
		cn.admin[i].Close()
	}
}

// window measures the traffic of windowIntervals renewal intervals with
// nothing but renewals going on, and reports it averaged over the nodes.
// It starts just after a renewal round trip, and ends half an interval
// after the last one it means to count, so that renewing once per interval
// counts exactly once per interval.
func (cn *countedNodes) window(b *testing.B) {
	type snap struct {
		rts     int64
		perConn []int64
		scripts int64
	}
	take := func() []snap {
		s := make([]snap, len(cn.addrs))
		for i := range cn.addrs {
			s[i].rts, s[i].perConn = cn.rts[i].snapshot()
			s[i].scripts = scriptCalls(b, cn.admin[i])
		}
		return s
	}
	interval := renewInterval()
	k := windowIntervals()
	if !testing.Short() {
		first, _ := cn.rts[0].snapshot()
		for deadline := time.Now().Add(2 * interval); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if n, _ := cn.rts[0].snapshot(); n != first {
				break
			}
		}
		time.Sleep(interval / 4) // let the round trip end on every node
	}
	start := take()
	time.Sleep(holdWindow() + interval/4)
	end := take()
	var rts, scripts, used, conns float64
	for i := range cn.addrs {
		rts += float64(end[i].rts - start[i].rts)
		scripts += float64(end[i].scripts - start[i].scripts)
		for j, v := range end[i].perConn {
			if j >= len(start[i].perConn) || v != start[i].perConn[j] {
				used++
			}
		}
		conns += float64(clientCount(b, cn.admin[i]) - 1) // less the admin connection
	}
	perNode := rts / float64(len(cn.addrs)) / k // per interval
	b.ReportMetric(perNode, "renewRT/interval/node")
	b.ReportMetric(perNode/interval.Seconds(), "renewRT/s/node")
	b.ReportMetric(scripts/float64(len(cn.addrs))/k/interval.Seconds(), "renewals/s/node")
	b.ReportMetric(conns/float64(len(cn.addrs)), "conns/node")
	b.ReportMetric(used/float64(len(cn.addrs)), "renewConns/node")
}

// scriptCalls returns how many scripts (EVAL, EVALSHA) the server has run.
func scriptCalls(b *testing.B, admin redis.Conn) int64 {
	info, err := redis.String(admin.Do("INFO", "commandstats"))
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for line := range strings.SplitSeq(info, "\n") {
		if !strings.HasPrefix(line, "cmdstat_evalsha:") && !strings.HasPrefix(line, "cmdstat_eval:") {
			continue
		}
		_, rest, _ := strings.Cut(line, "calls=")
		calls, _, _ := strings.Cut(rest, ",")
		n, _ := strconv.ParseInt(calls, 10, 64)
		total += n
	}
	return total
}

// clientCount returns the server's connected clients.
func clientCount(b *testing.B, admin redis.Conn) int {
	info, err := redis.String(admin.Do("INFO", "clients"))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(line, "connected_clients:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	b.Fatal("INFO clients has no connected_clients")
	return 0
}

// rtCounter counts the round trips of the connections it wrapped.
type rtCounter struct {
	mu    sync.Mutex
	conns []*countingConn
}

func (rc *rtCounter) wrap(c redis.Conn) redis.Conn {
	cc := &countingConn{Conn: c}
	rc.mu.Lock()
	rc.conns = append(rc.conns, cc)
	rc.mu.Unlock()
	return cc
}

// snapshot returns the round trips so far, in all and per connection.
func (rc *rtCounter) snapshot() (int64, []int64) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var total int64
	per := make([]int64, len(rc.conns))
	for i, c := range rc.conns {
		per[i] = c.rts.Load()
		total += per[i]
	}
	return total, per
}

// countingConn counts a round trip for each command sent with Do and each
// Flush of pipelined commands. Do("") (the pool's check when a connection
// is handed back) reads pending replies only, and is not counted.
type countingConn struct {
	redis.Conn
	rts atomic.Int64
}

var (
	_ redis.ConnWithTimeout = (*countingConn)(nil)
	_ redis.ConnWithContext = (*countingConn)(nil)
)

func (c *countingConn) count(cmd string) {
	if cmd != "" {
		c.rts.Add(1)
	}
}

func (c *countingConn) Do(cmd string, args ...any) (any, error) {
	c.count(cmd)
	return c.Conn.Do(cmd, args...)
}

func (c *countingConn) DoWithTimeout(d time.Duration, cmd string, args ...any) (any, error) {
	c.count(cmd)
	return c.Conn.(redis.ConnWithTimeout).DoWithTimeout(d, cmd, args...)
}

func (c *countingConn) DoContext(ctx context.Context, cmd string, args ...any) (any, error) {
	c.count(cmd)
	return c.Conn.(redis.ConnWithContext).DoContext(ctx, cmd, args...)
}

func (c *countingConn) Flush() error {
	c.count("flush")
	return c.Conn.Flush()
}

func (c *countingConn) ReceiveWithTimeout(d time.Duration) (any, error) {
	return c.Conn.(redis.ConnWithTimeout).ReceiveWithTimeout(d)
}

func (c *countingConn) ReceiveContext(ctx context.Context) (any, error) {
	return c.Conn.(redis.ConnWithContext).ReceiveContext(ctx)
}
