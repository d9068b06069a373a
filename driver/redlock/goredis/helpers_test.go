package goredis_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// nodes is a set of Redis servers and a key prefix private to one test.
type nodes struct {
	t       testing.TB
	servers []*testserver.Redis
	prefix  string
}

func newNodes(t testing.TB, servers []*testserver.Redis) *nodes {
	return &nodes{t: t, servers: servers, prefix: "g" + driver.NewOwner().String()[:12]}
}

func startNodes(t testing.TB, n int) *nodes {
	t.Helper()
	return newNodes(t, testserver.StartRedis(t, n))
}

// clients makes one go-redis client per server, closed when the test ends
// (after the Lockers over them: cleanups run last first). Tests use the
// options docs/REDIS.md advises; plain clients (go-redis's defaults) are
// for the benchmark.
func (ns *nodes) clients(plain ...bool) []redis.UniversalClient {
	var cs []redis.UniversalClient
	for _, s := range ns.servers {
		o := &redis.Options{Addr: s.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1}
		if len(plain) > 0 && plain[0] {
			o = &redis.Options{Addr: s.Addr()}
		}
		c := redis.NewClient(o)
		ns.t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	return cs
}

// records reads key's lock record on each server ("" where none).
func (ns *nodes) records(key string) []string {
	addrs := make([]string, len(ns.servers))
	for i, s := range ns.servers {
		addrs[i] = s.Addr()
	}
	return lockRecords(ns.t, addrs, redlock.LockKey(ns.prefix, key))
}

// lockRecords reads the string at lock on each server at addrs ("" where
// none).
func lockRecords(t testing.TB, addrs []string, lock string) []string {
	out := make([]string, len(addrs))
	for i, addr := range addrs {
		c := redis.NewClient(&redis.Options{Addr: addr})
		out[i] = c.Get(t.Context(), lock).Val()
		c.Close()
	}
	return out
}

// connector is a go-redis connector over fresh clients.
func (ns *nodes) connector(opts ...redlock.Option) driver.Connector {
	return goredis.FromClients(ns.clients(), append([]redlock.Option{redlock.WithPrefix(ns.prefix)}, opts...)...)
}

// locker is a go-redis Locker, closed when the test ends.
func (ns *nodes) locker(opts ...redlock.Option) driver.Locker {
	ns.t.Helper()
	return connectT(ns.t, ns.connector(opts...))
}

// redigo is a Locker of the redigo driver over the same servers.
func (ns *nodes) redigo() driver.Locker {
	ns.t.Helper()
	return connectT(ns.t, redigoConnector(ns.t, ns))
}

func connectT(t testing.TB, c driver.Connector) driver.Locker {
	t.Helper()
	l, err := c.Connect(context.Background())
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// harness implements conformance.Harness with go-redis clients.
type harness struct {
	*nodes
	abandoners
}

func (h *harness) NewConnector(context.Context) (driver.Connector, error) {
	return h.connector(), nil
}

// Vanish deletes the lock behind its holder's back on every node.
func (h *harness) Vanish(ctx context.Context, key string) error {
	for _, s := range h.servers {
		c := redis.NewClient(&redis.Options{Addr: s.Addr()})
		err := c.Del(ctx, redlock.LockKey(h.prefix, key)).Err()
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// Abandon takes key with a one-second TTL through a Locker of its own that
// never renews and is not closed until the harness is.
func (h *harness) Abandon(ctx context.Context, key string) error {
	return h.abandon(ctx, h.connector(), key)
}

// RestartEmpty restarts every server without its data (conformance.Restarter).
func (h *harness) RestartEmpty(context.Context) error {
	for _, s := range h.servers {
		s.Restart()
	}
	return nil
}
