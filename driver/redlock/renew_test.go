package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
)

// TestNoScriptReload: after SCRIPT FLUSH the scripts are sent again, one
// call at a time and pipelined.
func TestNoScriptReload(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := startCluster(t, n)
			l := c.locker()
			me := driver.NewOwner()
			flush := func() {
				for i := range n {
					if _, err := c.do(i, "SCRIPT", "FLUSH"); err != nil {
						t.Fatal(err)
					}
				}
			}
			flush()
			if _, err := acquire(t, l, "k", me); err != nil {
				t.Fatalf("Acquire after SCRIPT FLUSH: %v", err)
			}
			flush()
			batch := []driver.Renewal{{Key: "k", Owner: me, TTL: ttl}, {Key: "gone", Owner: me, TTL: ttl}}
			l.Renew(t.Context(), batch)
			if batch[0].Err != nil || !errors.Is(batch[1].Err, driver.ErrNotHeld) {
				t.Fatalf("Renew after SCRIPT FLUSH: %v, %v", batch[0].Err, batch[1].Err)
			}
			flush()
			if err := l.Release(t.Context(), "k", me); err != nil {
				t.Fatalf("Release after SCRIPT FLUSH: %v", err)
			}
		})
	}
}

// countingConn counts round trips: each Do with a command, each Flush.
type countingConn struct {
	redis.Conn
	trips *atomic.Int64
}

func (c countingConn) Flush() error { c.trips.Add(1); return c.Conn.Flush() }

func (c countingConn) Do(cmd string, args ...any) (any, error) {
	if cmd != "" {
		c.trips.Add(1)
	}
	return c.Conn.Do(cmd, args...)
}

func (c countingConn) DoWithTimeout(d time.Duration, cmd string, args ...any) (any, error) {
	if cmd != "" {
		c.trips.Add(1)
	}
	return redis.DoWithTimeout(c.Conn, d, cmd, args...)
}

func (c countingConn) DoContext(ctx context.Context, cmd string, args ...any) (any, error) {
	if cmd != "" {
		c.trips.Add(1)
	}
	return redis.DoContext(c.Conn, ctx, cmd, args...)
}

func (c countingConn) ReceiveWithTimeout(d time.Duration) (any, error) {
	return redis.ReceiveWithTimeout(c.Conn, d)
}

func (c countingConn) ReceiveContext(ctx context.Context) (any, error) {
	return redis.ReceiveContext(c.Conn, ctx)
}

// countingPools returns a pool per server whose connections count round
// trips, one counter per server.
func (c *cluster) countingPools() ([]*redis.Pool, []*atomic.Int64) {
	var pools []*redis.Pool
	var trips []*atomic.Int64
	for _, s := range c.servers {
		n := new(atomic.Int64)
		addr := s.Addr()
		pools = append(pools, &redis.Pool{MaxIdle: 4, Dial: func() (redis.Conn, error) {
			conn, err := redis.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			return countingConn{conn, n}, nil
		}})
		trips = append(trips, n)
	}
	return pools, trips
}

// TestRenewPipelined: a batch of 100 leases costs one round trip per node.
func TestRenewPipelined(t *testing.T) {
	c := startCluster(t, 3)
	pools, trips := c.countingPools()
	l := connect(t, redlock.FromPools(pools, redlock.WithPrefix(c.prefix)), nil)
	var batch []driver.Renewal
	for i := range 100 {
		key, owner := fmt.Sprintf("renew/%d", i), driver.NewOwner()
		if _, err := acquire(t, l, key, owner); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, driver.Renewal{Key: key, Owner: owner, TTL: ttl})
	}
	// An acquire returns at a quorum; the last node's answer may still be
	// under way, and would be counted below.
	redlock.Settle(l)
	l.Renew(t.Context(), batch[:1]) // the server learns the script (NOSCRIPT, then EVAL)
	for _, n := range trips {
		n.Store(0)
	}
	l.Renew(t.Context(), batch)
	for i, r := range batch {
		if r.Err != nil || r.Validity <= 0 {
			t.Fatalf("renewal %d: validity %v, %v", i, r.Validity, r.Err)
		}
	}
	for i, n := range trips {
		if got := n.Load(); got != 1 {
			t.Errorf("node %d: %d round trips for a batch of 100; want 1", i, got)
		}
	}
	// After SCRIPT FLUSH: one more round trip, for the scripts sent again.
	for i := range c.servers {
		c.do(i, "SCRIPT", "FLUSH")
		trips[i].Store(0)
	}
	l.Renew(t.Context(), batch)
	for i, n := range trips {
		if got := n.Load(); got != 2 || batch[i].Err != nil {
			t.Errorf("node %d after SCRIPT FLUSH: %d round trips (%v); want 2", i, got, batch[i].Err)
		}
	}
	for _, p := range pools {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	}
}

// TestRenewMajority: a lease changed or gone on a majority is lost; on a
// minority it is renewed.
func TestRenewMajority(t *testing.T) {
	c := startCluster(t, 5)
	l := c.locker()
	minority, majority, gone := driver.NewOwner(), driver.NewOwner(), driver.NewOwner()
	for key, owner := range map[string]driver.Owner{"minority": minority, "majority": majority, "gone": gone} {
		if _, err := acquire(t, l, key, owner); err != nil {
			t.Fatal(err)
		}
	}
	redlock.Settle(l) // the grants on every node, so that no late one undoes what follows
	c.plant(t, "minority", driver.NewOwner(), 0, 1)
	c.plant(t, "majority", driver.NewOwner(), 0, 1, 2)
	if err := c.delete("gone", 2, 3, 4); err != nil {
		t.Fatal(err)
	}
	batch := []driver.Renewal{
		{Key: "minority", Owner: minority, TTL: ttl},
		{Key: "majority", Owner: majority, TTL: ttl},
		{Key: "gone", Owner: gone, TTL: ttl},
	}
	l.Renew(t.Context(), batch)
	if batch[0].Err != nil {
		t.Errorf("changed on 2 of 5: %v; want renewed", batch[0].Err)
	}
	if !errors.Is(batch[1].Err, driver.ErrNotHeld) {
		t.Errorf("changed on 3 of 5: %v; want ErrNotHeld", batch[1].Err)
	}
	if !errors.Is(batch[2].Err, driver.ErrNotHeld) {
		t.Errorf("gone from 3 of 5: %v; want ErrNotHeld", batch[2].Err)
	}
	// The stale Release leaves the new majority owner alone.
	if err := l.Release(t.Context(), "majority", majority); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("Release of a lease changed on a majority: %v; want ErrNotHeld", err)
	}
	for i := range 3 {
		if got := c.owner(i, "majority"); got == "" || got == majority.String() {
			t.Errorf("node %d: %q after the stale release; want the other owner kept", i, got)
		}
	}
}
