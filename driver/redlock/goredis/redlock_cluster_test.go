package goredis_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// TestRedlockOverClusters is a Redlock whose nodes are three Redis
// Clusters, one *redis.ClusterClient each (a master per cluster: the
// quorum and the cluster code paths together, not the failovers, which
// TestCluster covers): the whole suite, a release waking the waiter on
// each cluster's sharded channel, and the quorum lost and found again when
// clusters stop answering.
func TestRedlockOverClusters(t *testing.T) {
	rcs := make([]*testserver.RedisCluster, 3)
	for i := range rcs {
		rcs[i] = testserver.StartRedisCluster(t, 1, 0)
	}
	t.Run("Conformance", func(t *testing.T) {
		conformance.Run(t, func(_ context.Context, t *testing.T) (conformance.Harness, error) {
			return &clustersHarness{clusters: newClusters(t, rcs)}, nil
		})
	})
	t.Run("Wake", func(t *testing.T) {
		cs := newClusters(t, rcs)
		holderL, waiterL := cs.locker(), cs.locker()
		holder, waiter := driver.NewOwner(), driver.NewOwner()
		wake := watchQueued(t, holderL, waiterL, "w", holder, waiter, ttl, cs.records)
		// Every cluster subscribed to the key's channel. (Each
		// subscription's confirmation wakes the waiter too, so the wake-up
		// after the release may be one of those: what shows the release's
		// is each cluster's SPUBLISH count.)
		lock := redlock.LockKey(cs[0].prefix, "w")
		for i, c := range cs {
			for deadline := time.Now().Add(10 * time.Second); len(c.pubsub(c.rc.Masters()[0], "SHARDCHANNELS", lock+":wake:*")) != 1; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("cluster %d: no subscription to the key's wake-up channel after 10 s", i)
				}
			}
		}
		before := make([]int, len(cs))
		for i, c := range cs {
			before[i] = c.spublished(t)
		}
		releaseWakes(t, holderL, waiterL, "w", holder, waiter, wake)
		// Release returns at a quorum: the last cluster's script may run
		// just after.
		for i, c := range cs {
			for deadline := time.Now().Add(5 * time.Second); c.spublished(t) <= before[i]; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Errorf("cluster %d published no wake-up within 5 s of the release (SPUBLISH calls %d, as before)", i, before[i])
					break
				}
			}
		}
	})
	t.Run("Quorum", func(t *testing.T) {
		cs := newClusters(t, rcs)
		l := cs.locker()
		ctx := t.Context()
		owner := driver.NewOwner()
		// One cluster paused (it takes connections and answers nothing):
		// two of three still make a quorum.
		first := rcs[0].Masters()[0]
		first.Pause()
		if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "q", Owner: owner, TTL: ttl}); err != nil {
			first.Resume()
			t.Fatalf("acquire with one cluster of three paused: %v", err)
		}
		// Two paused: no quorum, and the error says the nodes are
		// unreachable rather than that the key is held.
		second := rcs[1].Masters()[0]
		second.Pause()
		_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "q2", Owner: driver.NewOwner(), TTL: ttl})
		first.Resume()
		second.Resume()
		if !errors.Is(err, driver.ErrUnavailable) {
			t.Fatalf("acquire with two clusters of three paused: %v; want ErrUnavailable", err)
		}
		if err := l.Release(ctx, "q", owner); err != nil {
			t.Fatalf("release once every cluster answers again: %v", err)
		}
	})
}

// spublished returns how many SPUBLISH the cluster's first master has run
// (its scripts' included).
func (c *cluster) spublished(t *testing.T) int {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: c.rc.Masters()[0].Addr()})
	defer rc.Close()
	info, err := rc.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(info, "cmdstat_spublish:calls=")
	if !ok {
		return 0
	}
	n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
	return n
}

// records reads key's lock record on each cluster ("" where none).
func (cs clusters) records(key string) []string {
	masters := make([]string, len(cs))
	for i, c := range cs {
		masters[i] = c.rc.Masters()[0].Addr() // each cluster's one master
	}
	return lockRecords(cs[0].t, masters, redlock.LockKey(cs[0].prefix, key))
}

// clusters is one test's view of several Redis Clusters, one key prefix
// for all.
type clusters []*cluster

func newClusters(t testing.TB, rcs []*testserver.RedisCluster) clusters {
	prefix := "r" + driver.NewOwner().String()[:12]
	cs := make(clusters, len(rcs))
	for i, rc := range rcs {
		cs[i] = &cluster{t: t, rc: rc, prefix: prefix}
	}
	return cs
}

func (cs clusters) connector(opts ...redlock.Option) driver.Connector {
	clients := make([]redis.UniversalClient, len(cs))
	for i, c := range cs {
		clients[i] = c.client()
	}
	return goredis.FromClients(clients, append([]redlock.Option{redlock.WithPrefix(cs[0].prefix)}, opts...)...)
}

func (cs clusters) locker(opts ...redlock.Option) driver.Locker {
	cs[0].t.Helper()
	return connectT(cs[0].t, cs.connector(opts...))
}

// clustersHarness implements conformance.Harness over a Redlock of
// cluster clients.
type clustersHarness struct {
	clusters
	abandoners
}

func (h *clustersHarness) NewConnector(context.Context) (driver.Connector, error) {
	return h.connector(), nil
}

// Vanish deletes the lock behind its holder's back on every cluster.
func (h *clustersHarness) Vanish(ctx context.Context, key string) error {
	for _, c := range h.clusters {
		if err := c.client().Del(ctx, redlock.LockKey(c.prefix, key)).Err(); err != nil {
			return err
		}
	}
	return nil
}

func (h *clustersHarness) Abandon(ctx context.Context, key string) error {
	return h.abandon(ctx, h.connector(), key)
}

func (h *clustersHarness) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{
		TTL:        true,
		LossWithin: 5 * time.Second,
		FreeWithin: 15 * time.Second,
		Queue:      true,
	}
}
