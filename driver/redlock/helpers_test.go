package redlock_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// cluster is a set of Redis servers and a key prefix private to one test,
// so tests sharing servers never see each other's keys.
type cluster struct {
	t       testing.TB
	servers []*testserver.Redis
	prefix  string
	opts    []redlock.Option // every connector's
}

func newCluster(t testing.TB, servers []*testserver.Redis) *cluster {
	return &cluster{t: t, servers: servers, prefix: "t" + driver.NewOwner().String()[:12]}
}

func startCluster(t testing.TB, n int) *cluster {
	t.Helper()
	return newCluster(t, testserver.StartRedis(t, n))
}

func (c *cluster) addrs() []string {
	var a []string
	for _, s := range c.servers {
		a = append(a, s.Addr())
	}
	return a
}

// dsn returns the cluster's DSN with extra options (k=v, joined by &).
func (c *cluster) dsn(opts ...string) string {
	return "redis://" + strings.Join(c.addrs(), ",") + "?" + strings.Join(append([]string{"prefix=" + c.prefix}, opts...), "&")
}

// connector opens a connector to the cluster.
func (c *cluster) connector(opts ...string) driver.Connector {
	c.t.Helper()
	conn, err := redlock.NewConnector(c.dsn(opts...), c.opts...)
	if err != nil {
		c.t.Fatalf("OpenConnector: %v", err)
	}
	return conn
}

// locker connects a Locker, closed when the test ends.
func (c *cluster) locker(opts ...string) driver.Locker {
	c.t.Helper()
	l, err := c.connector(opts...).Connect(context.Background())
	if err != nil {
		c.t.Fatalf("Connect: %v", err)
	}
	c.t.Cleanup(func() { l.Close() })
	return l
}

// connect connects a Locker from conn (err is that of the constructor
// that made it), closed when the test ends.
func connect(t *testing.T, conn driver.Connector, err error) driver.Locker {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	l, err := conn.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// do runs a command on server i with a fresh connection.
func (c *cluster) do(i int, cmd string, args ...any) (any, error) {
	conn, err := redis.Dial("tcp", c.servers[i].Addr(), redis.DialConnectTimeout(time.Second), redis.DialReadTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.Do(cmd, args...)
}

// lockKey is the Redis key of the lock on key.
func (c *cluster) lockKey(key string) string { return redlock.LockKey(c.prefix, key) }

// owner returns the owner of key's lock on server i (the first 32 bytes
// of its holder record: the lock's, or its list head's lease's), "" if
// none.
func (c *cluster) owner(i int, key string) string {
	c.t.Helper()
	v, err := redis.String(c.do(i, "GET", c.lockKey(key)))
	if err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE") {
		var head string
		if head, err = redis.String(c.do(i, "LINDEX", c.lockKey(key), 0)); err == nil {
			v, err = redis.String(c.do(i, "GET", c.lockKey(key)+":l:"+head))
		}
	}
	if err != nil && err != redis.ErrNil {
		c.t.Fatalf("GET on %s: %v", c.servers[i].Addr(), err)
	}
	return v[:min(len(v), 32)]
}

// delete removes key's lock from the given servers.
func (c *cluster) delete(key string, servers ...int) error {
	for _, i := range servers {
		lock := c.lockKey(key)
		if _, err := c.do(i, "DEL", lock); err != nil {
			return fmt.Errorf("DEL on %s: %w", c.servers[i].Addr(), err)
		}
	}
	return nil
}

// heldEverywhere waits until every server holds key: an acquire returns
// once a quorum granted, and the other nodes' grants follow, so a fault
// injected right after it could meet a grant on a bare quorum.
func (c *cluster) heldEverywhere(t *testing.T, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := range c.servers {
		for c.owner(i, key) == "" {
			if time.Now().After(deadline) {
				t.Fatalf("node %d does not hold %q 10s after the acquire", i, key)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func (c *cluster) all() []int {
	idx := make([]int, len(c.servers))
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// harness implements conformance.Harness over a cluster.
type harness struct {
	*cluster
	mu        sync.Mutex
	abandoned []driver.Locker
}

func (h *harness) NewConnector(context.Context) (driver.Connector, error) {
	return redlock.NewConnector(h.dsn(), h.opts...)
}

// Vanish deletes the lock behind its holder's back on every node, as a
// flush or an eviction would: the holder finds out by renewing.
func (h *harness) Vanish(_ context.Context, key string) error {
	return h.delete(key, h.all()...)
}

// Abandon takes key with a one-second TTL through a Locker of its own that
// never renews and is not closed until the harness is.
func (h *harness) Abandon(ctx context.Context, key string) error {
	c, err := redlock.NewConnector(h.dsn(), h.opts...)
	if err != nil {
		return err
	}
	l, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.abandoned = append(h.abandoned, l)
	h.mu.Unlock()
	_, err = l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), TTL: time.Second})
	return err
}

func (h *harness) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.abandoned {
		l.Close()
	}
	return nil
}

func startRedisArgs(t testing.TB, n int, args ...string) []*testserver.Redis {
	t.Helper()
	if len(args) == 0 {
		return testserver.StartRedis(t, n)
	}
	return testserver.StartRedis(t, n, testserver.WithRedisArgs(args...))
}

// doAuth runs a command on server i as the default user with password.
func (c *cluster) doAuth(i int, password, cmd string, args ...any) (any, error) {
	conn, err := redis.Dial("tcp", c.servers[i].Addr(), redis.DialConnectTimeout(time.Second),
		redis.DialReadTimeout(5*time.Second), redis.DialPassword(password))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.Do(cmd, args...)
}
