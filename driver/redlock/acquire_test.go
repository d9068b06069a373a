package redlock_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
)

const ttl = 2 * time.Second

func acquire(t *testing.T, l driver.Locker, key string, owner driver.Owner) (driver.Grant, error) {
	t.Helper()
	return l.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: owner, TTL: ttl})
}

// plant sets key's lock to owner on the given servers, as another client's
// partial grant would.
func (c *cluster) plant(t *testing.T, key string, owner driver.Owner, servers ...int) {
	t.Helper()
	for _, i := range servers {
		if _, err := c.do(i, "SET", c.lockKey(key), owner.String(), "PX", 60000); err != nil {
			t.Fatal(err)
		}
	}
}

// TestQuorumAcquire: a key held elsewhere on a minority is still granted;
// on a majority it is refused, and the partial grant is released.
func TestQuorumAcquire(t *testing.T) {
	c := startCluster(t, 5)
	l := c.locker()
	other := driver.NewOwner()

	c.plant(t, "minority", other, 0, 1)
	me := driver.NewOwner()
	g, err := acquire(t, l, "minority", me)
	if err != nil {
		t.Fatalf("Acquire with 2 of 5 held elsewhere: %v", err)
	}
	if g.Token != 0 || g.Validity <= 0 || g.Validity >= ttl {
		t.Errorf("grant %+v; want token 0 and 0 < validity < TTL", g)
	}
	for i := 2; i < 5; i++ {
		if got := c.owner(i, "minority"); got != me.String() {
			t.Errorf("node %d holds %q; want the new owner", i, got)
		}
	}

	c.plant(t, "majority", other, 0, 1, 2)
	_, err = acquire(t, l, "majority", driver.NewOwner())
	if !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("Acquire with 3 of 5 held elsewhere: %v; want ErrLocked", err)
	}
	for i := 3; i < 5; i++ {
		if got := c.owner(i, "majority"); got != "" {
			t.Errorf("node %d still holds %q after a failed attempt; it must be released", i, got)
		}
	}
}

// TestRetryKeepsOwner: an attempt retried with its owner after its replies
// were lost finds its own grant, on the nodes that took it and the others.
func TestRetryKeepsOwner(t *testing.T) {
	c := startCluster(t, 5)
	l := c.locker()
	me := driver.NewOwner()
	c.plant(t, "retry", me, 0, 1, 2) // the first attempt got there; its replies did not come back
	if _, err := acquire(t, l, "retry", me); err != nil {
		t.Fatalf("retried Acquire: %v", err)
	}
	// The acquire returned at quorum; the other nodes answer after it (an
	// own record costs them a second round trip).
	redlock.Settle(l)
	for i := range 5 {
		if got := c.owner(i, "retry"); got != me.String() {
			t.Errorf("node %d holds %q; want the retried owner", i, got)
		}
		if pttl, _ := redis.Int64(c.do(i, "PTTL", c.lockKey("retry"))); pttl <= 0 || pttl > ttl.Milliseconds() {
			t.Errorf("node %d: PTTL %d; want the TTL refreshed to at most %d", i, pttl, ttl.Milliseconds())
		}
	}

	one := startCluster(t, 1)
	l1 := one.locker()
	g1, err := acquire(t, l1, "retry", me)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := acquire(t, l1, "retry", me)
	if err != nil || g2.Token != g1.Token {
		t.Fatalf("retry on one node: token %d, %v; want token %d", g2.Token, err, g1.Token)
	}

	// A fenced grant retried gives back its token and bumps no counter.
	fenced := driver.AcquireRequest{Key: "retry-fenced", Owner: me, TTL: ttl, Fencing: true}
	f1, err := l1.Acquire(t.Context(), fenced)
	if err != nil || f1.Token == 0 {
		t.Fatalf("fenced acquire: %+v, %v; want a token", f1, err)
	}
	fenced.Holder.Since = time.Now().Add(time.Second) // a retry's record differs after the owner
	f2, err := l1.Acquire(t.Context(), fenced)
	if err != nil || f2.Token != f1.Token {
		t.Fatalf("fenced retry: token %d, %v; want token %d", f2.Token, err, f1.Token)
	}
	if n, err := redis.Int64(one.do(0, "GET", one.lockKey("retry-fenced")+":fence")); err != nil || n != int64(f1.Token) {
		t.Fatalf("fencing counter %d, %v after a retry; want %d", n, err, f1.Token)
	}
	// The retry wrote its own record: renewing and releasing find it.
	batch := []driver.Renewal{{Key: "retry-fenced", Owner: me, TTL: ttl}, {Key: "retry", Owner: me, TTL: ttl}}
	l1.Renew(t.Context(), batch)
	for _, r := range batch {
		if r.Err != nil {
			t.Errorf("renew %s after a retry: %v", r.Key, r.Err)
		}
		if err := l1.Release(t.Context(), r.Key, me); err != nil {
			t.Errorf("release %s after a retry: %v", r.Key, err)
		}
	}
}

// TestLargeTokens: tokens past 10^14 (which Lua would print as 1e+14)
// are written, recognised on a retry and released like small ones.
func TestLargeTokens(t *testing.T) {
	c := startCluster(t, 1)
	l := c.locker()
	if _, err := c.do(0, "SET", c.lockKey("big")+":fence", 99_999_999_999_999); err != nil {
		t.Fatal(err)
	}
	me := driver.NewOwner()
	req := driver.AcquireRequest{Key: "big", Owner: me, TTL: ttl, Fencing: true}
	for range 2 { // the grant, then a retry that recognises it
		g, err := l.Acquire(t.Context(), req)
		if err != nil || g.Token != 100_000_000_000_000 {
			t.Fatalf("fenced acquire: token %d, %v; want 100000000000000", g.Token, err)
		}
	}
	if h, held, err := l.Inspect(t.Context(), "big"); err != nil || !held || h.Token != 100_000_000_000_000 {
		t.Fatalf("Inspect: %+v, %v, %v; want token 100000000000000", h, held, err)
	}
	if err := l.Release(t.Context(), "big", me); err != nil {
		t.Fatalf("release: %v", err)
	}
}

// TestOwnerFromAnotherLocker: a Locker that did not make the grant renews
// and releases it by the owner alone (the scripts compare the whole
// record only when the client knows it).
func TestOwnerFromAnotherLocker(t *testing.T) {
	for _, n := range []int{1, 3} {
		c := startCluster(t, n)
		a, b := c.locker(), c.locker()
		me := driver.NewOwner()
		if _, err := acquire(t, a, "other", me); err != nil {
			t.Fatal(err)
		}
		if err := b.Release(t.Context(), "other", driver.NewOwner()); !errors.Is(err, driver.ErrNotHeld) {
			t.Fatalf("%d nodes: release by a stranger: %v; want ErrNotHeld", n, err)
		}
		batch := []driver.Renewal{{Key: "other", Owner: me, TTL: ttl}}
		if b.Renew(t.Context(), batch); batch[0].Err != nil {
			t.Fatalf("%d nodes: renew from another Locker: %v", n, batch[0].Err)
		}
		if err := b.Release(t.Context(), "other", me); err != nil {
			t.Fatalf("%d nodes: release from another Locker: %v", n, err)
		}
		c.settledFree(t, b, "other") // a release returns at quorum
	}
}

// TestTooSlowReleases: a quorum granted, but after the validity ran out:
// the attempt fails and releases everywhere.
func TestTooSlowReleases(t *testing.T) {
	c := startCluster(t, 5)
	// A 150ms TTL with drift 0.45 leaves a validity of ~80ms. Three nodes
	// paused for 150ms (less than their 1s timeout) make the quorum late.
	l := c.locker("drift_factor=0.45", "timeout=1s")
	for i := 2; i < 5; i++ {
		c.servers[i].Pause()
	}
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		time.Sleep(150 * time.Millisecond)
		for i := 2; i < 5; i++ {
			c.servers[i].Resume()
		}
	}()
	defer func() { <-resumed }()
	_, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "slow", Owner: driver.NewOwner(), TTL: 150 * time.Millisecond})
	if err == nil || errors.Is(err, driver.ErrLocked) || !strings.Contains(err.Error(), "validity") {
		t.Fatalf("Acquire slower than its validity: %v; want an error saying so", err)
	}
	<-resumed
	c.settledFree(t, l, "slow") // a failed attempt released everywhere before it returned
}

// settledFree checks, once l's late answers are in, that no node holds
// key.
func (c *cluster) settledFree(t *testing.T, l driver.Locker, key string) {
	t.Helper()
	redlock.Settle(l)
	for i := range c.servers {
		if got := c.owner(i, key); got != "" {
			t.Errorf("node %d still holds %q (by %s) once every answer is in; it must be released everywhere", i, key, got)
		}
	}
}

// TestQuorumAnswersSuffice: with a minority paused, acquire and release
// return once a quorum has answered, without waiting out the paused
// nodes' timeout; the paused nodes are asked all the same (a node's
// release after its acquire answered), so once they are back no node
// keeps the key.
func TestQuorumAnswersSuffice(t *testing.T) {
	c := startCluster(t, 5)
	// No pipe: each call takes a pooled connection, and two are dialled to
	// every node beforehand, so the release is written to a paused node
	// while the acquire waits there on another connection (a dial would
	// wait for the node and keep them in order by chance).
	l := c.locker("timeout=3s", "pipeline=0")
	me := driver.NewOwner()
	var wg sync.WaitGroup
	for _, key := range []string{"warm-1", "warm-2"} {
		wg.Go(func() {
			if _, err := acquire(t, l, key, me); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, key := range []string{"warm-1", "warm-2"} {
		if err := l.Release(t.Context(), key, me); err != nil {
			t.Fatal(err)
		}
	}
	c.servers[3].Pause()
	c.servers[4].Pause()
	start := time.Now()
	if _, err := acquire(t, l, "quick", me); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(t.Context(), "quick", me); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("acquire and release with 2 of 5 nodes paused took %v; want them back at quorum, not after the 3s timeout", took)
	}
	time.Sleep(50 * time.Millisecond) // the late calls wait on the paused nodes' sockets
	c.servers[3].Resume()
	c.servers[4].Resume()
	c.settledFree(t, l, "quick")
}

// TestFencing: one node gives increasing tokens; several refuse WithFencing.
func TestFencing(t *testing.T) {
	l := startCluster(t, 3).locker()
	_, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "f", Owner: driver.NewOwner(), TTL: ttl, Fencing: true})
	if !errors.Is(err, driver.ErrUnimplemented) || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Fencing over 3 nodes: %v; want ErrUnimplemented", err)
	}
	c := startCluster(t, 1)
	l = c.locker()
	var last uint64
	for range 5 {
		owner := driver.NewOwner()
		g, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "f", Owner: owner, TTL: ttl, Fencing: true})
		if err != nil || g.Token <= last {
			t.Fatalf("token %d after %d, %v; want strictly increasing", g.Token, last, err)
		}
		last = g.Token
		if err := l.Release(t.Context(), "f", owner); err != nil {
			t.Fatal(err)
		}
		// A grant that asks for no token leaves the counter alone: tokens
		// stay strictly increasing among the fenced grants.
		owner = driver.NewOwner()
		g, err = l.Acquire(t.Context(), driver.AcquireRequest{Key: "f", Owner: owner, TTL: ttl})
		if err != nil || g.Token != 0 {
			t.Fatalf("unfenced grant: token %d, %v; want 0", g.Token, err)
		}
		if n, err := redis.Int64(c.do(0, "GET", c.lockKey("f")+":fence")); err != nil || n != int64(last) {
			t.Fatalf("fencing counter %d, %v after an unfenced grant; want %d", n, err, last)
		}
		if err := l.Release(t.Context(), "f", owner); err != nil {
			t.Fatal(err)
		}
	}
}

// gatedPools returns a pool per server that dials every connection anew
// (none is kept idle); a dial to a server in gated waits until gate is
// closed, as a connection slow to come up would.
func (c *cluster) gatedPools(t *testing.T, gate <-chan struct{}, gated ...int) []*redis.Pool {
	var pools []*redis.Pool
	for i, s := range c.servers {
		addr := s.Addr()
		slow := slices.Contains(gated, i)
		p := &redis.Pool{DialContext: func(ctx context.Context) (redis.Conn, error) {
			if slow {
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return redis.DialContext(ctx, "tcp", addr)
		}}
		t.Cleanup(func() { p.Close() })
		pools = append(pools, p)
	}
	return pools
}

// TestAcquireAfterReleaseAtQuorum: a grant whose SETs to slow nodes land
// after its release returned at quorum leaves ghosts there until its
// background release deletes them. An attempt of the same Locker that
// fails on them, but would have won without them, deletes them and wins,
// even when they are on more than N-quorum nodes (as the ghosts of two
// released grants can be); another owner's key is never taken for one.
func TestAcquireAfterReleaseAtQuorum(t *testing.T) {
	c := startCluster(t, 5)
	gate := make(chan struct{})
	l := connect(t, redlock.FromPools(c.gatedPools(t, gate, 3, 4), redlock.WithPrefix(c.prefix), redlock.WithNodeTimeout(5*time.Second)), nil)
	released := driver.NewOwner()
	if _, err := acquire(t, l, "k", released); err != nil { // at quorum: nodes 3 and 4 are still dialling
		close(gate)
		t.Fatal(err)
	}
	err := l.Release(t.Context(), "k", released) // at quorum: 3 and 4 are yet to answer
	close(gate)
	if err != nil {
		t.Fatal(err)
	}
	redlock.Settle(l)
	c.plant(t, "k", released, 0, 1, 2) // its ghosts, as late SETs of released grants leave them
	if _, err := acquire(t, l, "k", driver.NewOwner()); err != nil {
		t.Fatalf("Acquire meeting the ghosts of a grant this Locker released: %v; want it granted", err)
	}
	c.plant(t, "other", driver.NewOwner(), 0, 1, 2)
	if _, err := acquire(t, l, "other", driver.NewOwner()); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("Acquire of a key another owner holds on 3 of 5: %v; want ErrLocked", err)
	}
}
