package goredis_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// TestScriptsFlushed: after SCRIPT FLUSH the scripts are sent again as
// EVAL (go-redis's NOSCRIPT reply is recognised), over RESP2 and RESP3:
// fenced acquires, renewals in a batch, Inspect and releases all work.
func TestScriptsFlushed(t *testing.T) {
	srv := testserver.StartRedis(t, 1)[0]
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprint("resp", proto), func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Protocol: proto, ContextTimeoutEnabled: true})
			defer c.Close()
			l := connectT(t, goredis.FromClient(c, redlock.WithPrefix(fmt.Sprint("flush", proto))))
			var last uint64
			for i := range 3 {
				if err := c.ScriptFlush(t.Context()).Err(); err != nil {
					t.Fatal(err)
				}
				owners := []driver.Owner{driver.NewOwner(), driver.NewOwner()}
				var rs []driver.Renewal
				for k, o := range owners {
					key := fmt.Sprint("s", k)
					g, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: o, TTL: ttl, Fencing: true})
					if err != nil {
						t.Fatalf("round %d: fenced acquire: %v", i, err)
					}
					if k == 0 {
						if g.Token <= last {
							t.Fatalf("token %d after %d", g.Token, last)
						}
						last = g.Token
					}
					rs = append(rs, driver.Renewal{Key: key, Owner: o, TTL: ttl})
				}
				if err := c.ScriptFlush(t.Context()).Err(); err != nil {
					t.Fatal(err)
				}
				l.Renew(t.Context(), rs)
				for _, r := range rs {
					if r.Err != nil || r.Validity <= 0 {
						t.Fatalf("renewal of %s: %v, validity %v", r.Key, r.Err, r.Validity)
					}
				}
				if _, held, err := l.Inspect(t.Context(), "s0"); err != nil || !held {
					t.Fatalf("Inspect: held %v, %v", held, err)
				}
				for k, o := range owners {
					if err := l.Release(t.Context(), fmt.Sprint("s", k), o); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := l.Ping(t.Context()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		})
	}
}

// TestPausedNodeBounded: with ContextTimeoutEnabled the node timeout
// bounds a call on a paused server (not the client's 30 s ReadTimeout),
// and the error is driver.ErrUnavailable.
func TestPausedNodeBounded(t *testing.T) {
	srv := testserver.StartRedis(t, 1)[0]
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, ReadTimeout: 30 * time.Second, MaxRetries: -1})
	defer c.Close()
	l := connectT(t, goredis.FromClient(c, redlock.WithNodeTimeout(200*time.Millisecond)))
	if err := l.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	began := time.Now()
	_, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "p", Owner: driver.NewOwner(), TTL: ttl})
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("Acquire on a paused node: %v; want driver.ErrUnavailable", err)
	}
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("Acquire on a paused node took %v; want about the node timeout", d)
	}
}

// TestRedlockMinorityPaused: over three clients, one server paused, an
// acquire and a release still succeed at quorum, each within seconds (the
// node timeout bounds the paused node's call), and another owner is still
// refused.
func TestRedlockMinorityPaused(t *testing.T) {
	ns := startNodes(t, 3)
	l := ns.locker(redlock.WithNodeTimeout(200 * time.Millisecond))
	if err := l.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	ns.servers[2].Pause()
	defer ns.servers[2].Resume()
	owner := driver.NewOwner()
	began := time.Now()
	if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "m", Owner: owner, TTL: ttl}); err != nil {
		t.Fatalf("Acquire with one of 3 nodes paused: %v", err)
	}
	if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "m", Owner: driver.NewOwner(), TTL: ttl}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("another owner's acquire: %v; want ErrLocked", err)
	}
	if err := l.Release(t.Context(), "m", owner); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("took %v with a node paused", d)
	}
}
