package goredis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// TestCluster runs everything that needs a Redis Cluster on one: 3 masters
// with a replica each (starting one takes seconds). The subtests that
// move slots or kill masters come last.
func TestCluster(t *testing.T) {
	rc := testserver.StartRedisCluster(t, 3, 1)
	t.Run("Conformance", func(t *testing.T) {
		conformance.Run(t, func(_ context.Context, t *testing.T) (conformance.Harness, error) {
			return &clusterHarness{cluster: newCluster(t, rc)}, nil
		})
	})
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprint("Wake/resp", proto), func(t *testing.T) {
			c := newCluster(t, rc)
			c.proto = proto
			testClusterWake(t, c)
		})
	}
	t.Run("Quiet", func(t *testing.T) { testClusterQuiet(t, newCluster(t, rc)) })
	t.Run("NoShardedPubSub", func(t *testing.T) { testClusterNoShardedPubSub(t, newCluster(t, rc)) })
	t.Run("Spread", func(t *testing.T) { testClusterSpread(t, newCluster(t, rc)) })
	t.Run("ScriptsFlushed", func(t *testing.T) { testClusterScriptsFlushed(t, newCluster(t, rc)) })
	t.Run("ParallelDistinctKeys", func(t *testing.T) { testClusterParallel(t, newCluster(t, rc)) })
	t.Run("ManyKeys", func(t *testing.T) { testClusterManyKeys(t, newCluster(t, rc)) })
	t.Run("PingEveryMaster", func(t *testing.T) { testClusterPingEveryMaster(t, newCluster(t, rc)) })
	t.Run("Reshard", func(t *testing.T) { testClusterReshard(t, newCluster(t, rc)) })
	t.Run("FailoverLoses", func(t *testing.T) { testClusterFailover(t, newCluster(t, rc), false) })
	t.Run("FailoverKeeps", func(t *testing.T) { testClusterFailover(t, newCluster(t, rc), true) })
	t.Run("FailoverResubscribes", func(t *testing.T) { testClusterFailoverResubscribes(t, newCluster(t, rc)) })
}

// testClusterSpread: keys of one Locker land on every master, each on the
// master of its slot, where a plain GET finds the holder record.
func testClusterSpread(t *testing.T, c *cluster) {
	l := c.locker()
	byMaster := map[string]int{}
	for i := range 24 {
		key := fmt.Sprint("s", i)
		owner := driver.NewOwner()
		if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: owner, TTL: ttl, Fencing: true}); err != nil {
			t.Fatal(err)
		}
		lock := redlock.LockKey(c.prefix, key)
		master := c.rc.SlotOwner(c.rc.KeySlot(lock))
		n := redis.NewClient(&redis.Options{Addr: master.Addr()})
		rec, err := n.Get(t.Context(), lock).Result()
		n.Close()
		if err != nil || !strings.HasPrefix(rec, owner.String()) {
			t.Fatalf("GET %s on its slot's master: %q, %v; want the holder's record", key, rec, err)
		}
		byMaster[master.Addr()]++
	}
	if len(byMaster) != 3 {
		t.Fatalf("24 keys on %d masters (%v); want all 3", len(byMaster), byMaster)
	}
	t.Logf("24 keys over the masters: %v", byMaster)
}

// testClusterScriptsFlushed: with every master's script cache flushed,
// each waiting acquire, renewal batch (a pipeline go-redis splits per
// master) and release is answered NOSCRIPT by its key's master and sent
// again as EVAL, on keys over every master; then every master has
// scripts cached again.
func testClusterScriptsFlushed(t *testing.T, c *cluster) {
	l := c.locker()
	keys, owners := make([]string, 24), make([]driver.Owner, 24)
	masters := map[string]bool{}
	for i := range keys {
		keys[i], owners[i] = fmt.Sprint("n", i), driver.NewOwner()
		masters[c.rc.SlotOwner(c.rc.KeySlot(redlock.LockKey(c.prefix, keys[i]))).Addr()] = true
	}
	if len(masters) != 3 {
		t.Fatalf("keys on %d masters; want 3", len(masters))
	}
	c.eachMaster(func(n *redis.Client) error { return n.ScriptFlush(t.Context()).Err() })
	var rs []driver.Renewal
	for i, key := range keys {
		if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: owners[i], TTL: ttl, Wait: true}); err != nil {
			t.Fatalf("acquire %s after SCRIPT FLUSH: %v", key, err)
		}
		rs = append(rs, driver.Renewal{Key: key, Owner: owners[i], TTL: ttl})
	}
	c.eachMaster(func(n *redis.Client) error { return n.ScriptFlush(t.Context()).Err() })
	l.Renew(t.Context(), rs)
	for _, r := range rs {
		if r.Err != nil || r.Validity <= 0 {
			t.Fatalf("renewal of %s after SCRIPT FLUSH: %v, validity %v", r.Key, r.Err, r.Validity)
		}
	}
	c.eachMaster(func(n *redis.Client) error { return n.ScriptFlush(t.Context()).Err() })
	for i, key := range keys {
		if err := l.Release(t.Context(), key, owners[i]); err != nil {
			t.Fatalf("release %s after SCRIPT FLUSH: %v", key, err)
		}
	}
	c.eachMaster(func(n *redis.Client) error {
		info, err := n.Info(t.Context(), "memory").Result()
		if err == nil && !strings.Contains(info, "number_of_cached_scripts:") || strings.Contains(info, "number_of_cached_scripts:0\r") {
			t.Errorf("master %s after the releases: no script cached", n.Options().Addr)
		}
		return err
	})
}

// eachMaster runs f on a client of each master, failing the test on an
// error.
func (c *cluster) eachMaster(f func(*redis.Client) error) {
	c.t.Helper()
	for _, m := range c.rc.Masters() {
		n := redis.NewClient(&redis.Options{Addr: m.Addr()})
		err := f(n)
		n.Close()
		if err != nil {
			c.t.Fatalf("master %s: %v", m.Addr(), err)
		}
	}
}

// testClusterParallel: 64 goroutines, each on a key of its own, take and
// give back their keys through one cluster client (what bench/ measures
// beside one node): every TryLock is granted, every Unlock succeeds.
func testClusterParallel(t *testing.T, c *cluster) {
	cl := mutex.NewClient(c.connector())
	defer cl.Close()
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			m := cl.NewMutex(fmt.Sprint("p", g), mutex.WithTTL(ttl))
			for range 20 {
				l, err := m.TryLock(t.Context())
				if err != nil {
					t.Errorf("goroutine %d: TryLock: %v", g, err)
					return
				}
				if err := l.Unlock(t.Context()); err != nil {
					t.Errorf("goroutine %d: Unlock: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// testClusterReshard: while Lockers take turns on one key, Lock waiting
// for it, its slot moves to another master step by step (MigrateSlot):
// the source answers -ASK once the keys have moved, the target -MOVED to
// a client that did not ask (checked below at each step), and the go-redis
// clients follow them. A shared counter, checked under -race, never sees
// two holders, and every Lock is served: its waiters are woken (their
// subscriptions follow the slot: the source ends them, SUNSUBSCRIBE) or
// poll.
func testClusterReshard(t *testing.T, c *cluster) {
	lock := redlock.LockKey(c.prefix, "r")
	slot := c.rc.KeySlot(lock)
	from := c.rc.SlotOwner(slot)
	var to *testserver.ClusterNode
	for _, m := range c.rc.Masters() {
		if m != from {
			to = m
		}
	}
	var (
		inside, entries int // guarded by the lock under test alone
		served          atomic.Int64
		stop            atomic.Bool
		wg              sync.WaitGroup
	)
	for range 4 {
		cl := mutex.NewClient(c.connector())
		t.Cleanup(func() { cl.Close() })
		wg.Go(func() {
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				l, err := cl.NewMutex("r", mutex.WithTTL(ttl)).Lock(ctx)
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
				inside++
				if inside != 1 {
					t.Errorf("%d holders at once", inside)
				}
				entries++
				served.Add(1)
				time.Sleep(5 * time.Millisecond)
				inside--
				if err := l.Unlock(t.Context()); err != nil {
					t.Logf("Unlock: %v", err) // the grant then ends at its TTL
				}
			}
		})
	}
	raw := func(n *testserver.ClusterNode) string {
		rc := redis.NewClient(&redis.Options{Addr: n.Addr()})
		defer rc.Close()
		err := rc.Get(t.Context(), lock).Err()
		if err == nil || errors.Is(err, redis.Nil) {
			return "served"
		}
		return strings.Fields(err.Error())[0]
	}
	var steps []string
	c.rc.MigrateSlot(slot, to, func(step testserver.MigrationStep) {
		steps = append(steps, fmt.Sprintf("%s at %d", step, served.Load()))
		if step == testserver.MigrationKeysMoved {
			if got := raw(from); got != "ASK" {
				t.Errorf("keys moved: the source answers %s; want ASK", got)
			}
			if got := raw(to); got != "MOVED" {
				t.Errorf("keys moved: the target answers %s without ASKING; want MOVED", got)
			}
		}
		time.Sleep(time.Second) // Lockers at work in this state
	})
	if got := raw(from); got != "MOVED" {
		t.Errorf("after the move the source answers %s; want MOVED", got)
	}
	moved := served.Load()
	time.Sleep(2 * time.Second) // and after it
	// The waiters' subscriptions followed the slot: the source ended them
	// (SUNSUBSCRIBE) and they were dialled again, to the target.
	followed := false
	for deadline := time.Now().Add(5 * time.Second); !followed && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		followed = len(c.pubsub(to, "SHARDCHANNELS", lock+":wake:*")) > 0 && len(c.pubsub(from, "SHARDCHANNELS", lock+":wake:*")) == 0
	}
	if !followed {
		t.Errorf("after the move: shard channels %q on the target, %q on the source; want the waiters' on the target alone",
			c.pubsub(to, "SHARDCHANNELS", lock+":wake:*"), c.pubsub(from, "SHARDCHANNELS", lock+":wake:*"))
	}
	stop.Store(true)
	wg.Wait()
	if served.Load() == moved {
		t.Fatal("no Lock served after the move")
	}
	t.Logf("Locks served: %s, %d when moved, %d in all", strings.Join(steps, ", "), moved, entries)
}

// testClusterFailover: a key's master is killed while a Locker holds the
// key, and a replica takes over. Redis replicates asynchronously: with the
// replica paused (PauseReplication) the grant never reached it, so the
// promoted replica has no lock, another Locker takes the key, and the
// holder's renewal reports the lease lost (keeps false). With the grant
// replicated before the kill, the lock survives: the other Locker is
// refused and the holder renews (keeps true).
func testClusterFailover(t *testing.T, c *cluster, keeps bool) {
	master, key := c.keyWithReplica(t)
	a, b := c.locker(), c.locker()
	owner := driver.NewOwner()
	var resume func()
	if !keeps {
		resume = c.rc.PauseReplication(c.rc.Replicas(master)[0])
	}
	if _, err := a.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: owner, TTL: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if keeps {
		c.rc.WaitOK() // the replica has applied the grant
	}
	promoted := c.rc.KillMaster(master)
	if resume != nil {
		resume() // the promoted replica takes writes again
	}
	t.Logf("killed master %s, replica %s promoted", master.Addr(), promoted.Addr())

	// Each client finds the new master once it has reloaded its slot map
	// (its calls until then fail, unavailable); then b is refused or
	// granted, and a's renewal succeeds or finds the lease lost.
	err := untilReached(t, func() error {
		_, err := b.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), TTL: ttl})
		return err
	})
	renewal := []driver.Renewal{{Key: key, Owner: owner, TTL: 30 * time.Second}}
	untilReached(t, func() error {
		a.Renew(t.Context(), renewal)
		return renewal[0].Err
	})
	if keeps {
		if !errors.Is(err, driver.ErrLocked) {
			t.Fatalf("after a failover with the grant replicated, another Locker's acquire: %v; want ErrLocked", err)
		}
		if renewal[0].Err != nil {
			t.Fatalf("the holder's renewal: %v; want it held", renewal[0].Err)
		}
		return
	}
	if err != nil {
		t.Fatalf("after a failover that lost the grant, another Locker's acquire: %v; want it granted (the lock was lost)", err)
	}
	if !errors.Is(renewal[0].Err, driver.ErrNotHeld) {
		t.Fatalf("the first holder's renewal: %v; want ErrNotHeld (its lease lost)", renewal[0].Err)
	}
}

// keyWithReplica returns a running master that has a running replica and
// a key whose lock lives on it.
func (c *cluster) keyWithReplica(t *testing.T) (*testserver.ClusterNode, string) {
	t.Helper()
	for _, m := range c.rc.Masters() {
		if len(c.rc.Replicas(m)) == 0 {
			continue
		}
		for i := range 1000 {
			key := fmt.Sprint("f", i)
			if c.rc.SlotOwner(c.rc.KeySlot(redlock.LockKey(c.prefix, key))) == m {
				return m, key
			}
		}
	}
	t.Fatal("no master with a replica")
	return nil, ""
}

// testClusterWake: a waiter on a cluster is subscribed by SSUBSCRIBE to
// its key's channel on the master serving the key's slot (PUBSUB
// SHARDCHANNELS there lists it, no node has a plain channel), the
// release's SPUBLISH wakes it, and the subscription ends soon after its
// wait; over RESP2 and RESP3.
func testClusterWake(t *testing.T, c *cluster) {
	holderL, waiterL := c.locker(), c.locker()
	holder, waiter := driver.NewOwner(), driver.NewOwner()
	wake := watchQueued(t, holderL, waiterL, "w", holder, waiter, ttl, nil)
	lock := redlock.LockKey(c.prefix, "w")
	master := c.rc.SlotOwner(c.rc.KeySlot(lock))
	for _, n := range c.rc.Nodes() {
		shard := c.pubsub(n, "SHARDCHANNELS", c.prefix+"*")
		plain := c.pubsub(n, "CHANNELS", c.prefix+"*")
		if n == master && (len(shard) != 1 || !strings.HasPrefix(shard[0], lock+":wake:")) {
			t.Errorf("the key's master %s has shard channels %q; want %s:wake:<client id>", n.Addr(), shard, lock)
		}
		if n != master && len(shard) > 0 || len(plain) > 0 {
			t.Errorf("node %s has shard channels %q and channels %q; want none", n.Addr(), shard, plain)
		}
	}
	releaseWakes(t, holderL, waiterL, "w", holder, waiter, wake)
	// Its wait ended with the grant: the key's subscription is closed
	// after lingering (driver.QueueHold) in case the key is waited on
	// again.
	time.Sleep(driver.QueueHold / 2)
	if got := c.pubsub(master, "SHARDCHANNELS", c.prefix+"*"); len(got) != 1 {
		t.Errorf("the key's channels %q just after its last wait ended; want it lingering", got)
	}
	for deadline := time.Now().Add(driver.QueueHold + 5*time.Second); len(c.pubsub(master, "SHARDCHANNELS", c.prefix+"*")) > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the key's channel still subscribed 5 s after it stopped lingering: %q", c.pubsub(master, "SHARDCHANNELS", c.prefix+"*"))
		}
	}
}

// testClusterQuiet: a key's sharded subscription lives on its pings'
// answers: for 12 s (two pings and more than its read deadline) no wake-up
// comes, which a subscription dialled again would give (its confirmation
// wakes the key's waiters); then a release wakes the waiter.
func testClusterQuiet(t *testing.T, c *cluster) {
	checkQuietWake(t, c.locker(), c.locker())
}

// testClusterNoShardedPubSub: where SPUBLISH and SSUBSCRIBE fail (here an
// ACL forbids them; a server before Redis 7 lacks them), a release still
// keeps the key for the head and succeeds, and a Lock waiting for the key
// is served by polling.
func testClusterNoShardedPubSub(t *testing.T, c *cluster) {
	user := "nosharded" + c.prefix
	for _, n := range c.rc.Nodes() {
		rc := redis.NewClient(&redis.Options{Addr: n.Addr()})
		err := rc.Do(t.Context(), "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-spublish", "-ssubscribe").Err()
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.rc.Addrs(), ContextTimeoutEnabled: true, Username: user, Password: "pw"})
	defer cc.Close()
	holderL := c.locker()
	waiter := mutex.NewClient(goredis.FromClient(cc, redlock.WithPrefix(c.prefix)))
	defer waiter.Close()
	holder := driver.NewOwner()
	if _, err := holderL.Acquire(t.Context(), driver.AcquireRequest{Key: "d", Owner: holder, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		defer cancel()
		l, err := waiter.NewMutex("d", mutex.WithTTL(ttl)).Lock(ctx)
		if err == nil {
			err = l.Unlock(ctx)
		}
		done <- err
	}()
	time.Sleep(500 * time.Millisecond) // the waiter queued, its SSUBSCRIBE refused
	// A release by the waiter's client keeps the key for it: SPUBLISH refused.
	noPub := connectT(t, goredis.FromClient(cc, redlock.WithPrefix(c.prefix)))
	if err := noPub.Release(t.Context(), "d", holder); err != nil {
		t.Fatalf("release where SPUBLISH is refused: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the waiting Lock: %v", err)
	}
}

// pubsub returns what PUBSUB sub pattern answers on node n.
func (c *cluster) pubsub(n *testserver.ClusterNode, sub, pattern string) []string {
	c.t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: n.Addr()})
	defer rc.Close()
	v, err := rc.Do(context.Background(), "PUBSUB", sub, pattern).StringSlice()
	if err != nil {
		c.t.Fatalf("PUBSUB %s on %s: %v", sub, n.Addr(), err)
	}
	return v
}

// cluster is a Redis Cluster and a key prefix private to one test.
type cluster struct {
	t      testing.TB
	rc     *testserver.RedisCluster
	prefix string
	proto  int // the clients' RESP version; 0: go-redis's default (3)
}

func newCluster(t testing.TB, rc *testserver.RedisCluster) *cluster {
	return &cluster{t: t, rc: rc, prefix: "c" + driver.NewOwner().String()[:12]}
}

// client is a fresh cluster client with the options docs/REDIS.md
// advises, closed when the test ends. It is warmed up as an application's
// would be: the slot map loaded and every master dialled (a cold client's
// first call does that within the call's bound, and makes the client's
// own goroutines, which NoGoroutineAfterClose would count).
func (c *cluster) client() *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.rc.Addrs(), ContextTimeoutEnabled: true, Protocol: c.proto})
	c.t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := cc.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return n.Ping(ctx).Err() })
	if err != nil {
		c.t.Fatalf("cluster client: %v", err)
	}
	return cc
}

func (c *cluster) connector(opts ...redlock.Option) driver.Connector {
	return goredis.FromClient(c.client(), append([]redlock.Option{redlock.WithPrefix(c.prefix)}, opts...)...)
}

func (c *cluster) locker(opts ...redlock.Option) driver.Locker {
	c.t.Helper()
	return connectT(c.t, c.connector(opts...))
}

// clusterHarness implements conformance.Harness over a cluster client.
type clusterHarness struct {
	*cluster
	abandoners
}

func (h *clusterHarness) NewConnector(context.Context) (driver.Connector, error) {
	return h.connector(), nil
}

func (h *clusterHarness) Vanish(ctx context.Context, key string) error {
	return h.client().Del(ctx, redlock.LockKey(h.prefix, key)).Err()
}

func (h *clusterHarness) Abandon(ctx context.Context, key string) error {
	return h.abandon(ctx, h.connector(), key)
}

func (h *clusterHarness) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{
		Fencing:    true,
		TTL:        true,
		LossWithin: 5 * time.Second,
		FreeWithin: 15 * time.Second,
		Queue:      true,
	}
}

// untilReached calls f until it returns an error other than
// driver.ErrUnavailable, for up to 15 s, and returns that error.
func untilReached(t *testing.T, f func() error) error {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := f()
		if !errors.Is(err, driver.ErrUnavailable) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testClusterPingEveryMaster: Ping's maxmemory-policy check reaches every
// master, not the one node a keyless CONFIG GET would go to: a policy that
// evicts on any one of them, in turn, fails it.
func testClusterPingEveryMaster(t *testing.T, c *cluster) {
	setPolicy := func(addr, policy string) {
		rc := redis.NewClient(&redis.Options{Addr: addr})
		defer rc.Close()
		if err := rc.ConfigSet(context.Background(), "maxmemory-policy", policy).Err(); err != nil {
			t.Fatal(err)
		}
	}
	cl := mutex.NewClient(c.connector())
	defer cl.Close()
	if err := cl.Ping(t.Context()); err != nil {
		t.Fatalf("Ping, noeviction everywhere: %v", err)
	}
	for _, m := range c.rc.Masters() {
		setPolicy(m.Addr(), "allkeys-lru")
		err := cl.Ping(t.Context())
		setPolicy(m.Addr(), "noeviction")
		if err == nil || !strings.Contains(err.Error(), "maxmemory-policy is allkeys-lru") {
			t.Fatalf("Ping, allkeys-lru on master %s alone: %v; want an error saying so", m.Addr(), err)
		}
	}
}
