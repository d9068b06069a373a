package goredis_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
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
}

// cluster is a Redis Cluster and a key prefix private to one test.
type cluster struct {
	t      testing.TB
	rc     *testserver.RedisCluster
	prefix string
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
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.rc.Addrs(), ContextTimeoutEnabled: true})
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
	mu        sync.Mutex
	abandoned []driver.Locker
}

func (h *clusterHarness) NewConnector(context.Context) (driver.Connector, error) {
	return h.connector(), nil
}

func (h *clusterHarness) Vanish(ctx context.Context, key string) error {
	return h.client().Del(ctx, redlock.LockKey(h.prefix, key)).Err()
}

func (h *clusterHarness) Abandon(ctx context.Context, key string) error {
	l, err := h.connector().Connect(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.abandoned = append(h.abandoned, l)
	h.mu.Unlock()
	_, err = l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), TTL: time.Second})
	return err
}

func (h *clusterHarness) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.abandoned {
		l.Close()
	}
	return nil
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
