package redlock_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/internal/testing/chaos"
)

// idleCut waits until server i has closed every connection but those
// subscribed (its timeout spares them), as its timeout does after an
// idle gap.
func (c *cluster) idleCut(t *testing.T, i int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		list, err := redis.String(c.do(i, "CLIENT", "LIST"))
		if err != nil {
			t.Fatal(err)
		}
		others := 0
		for line := range strings.SplitSeq(strings.TrimSpace(list), "\n") {
			if !strings.Contains(line, "cmd=client") && !strings.Contains(line, " sub=1") {
				others++
			}
		}
		if others == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server %d kept idle connections past its timeout:\n%s", i, list)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// idleCalls runs every Locker call after the connections it had used sat
// idle until the server (or a proxy) closed them (cut): none may fail for
// it. Concurrent calls first leave several connections in the pool, so
// that, without a check, each call after the cut would take a dead one.
func idleCalls(t *testing.T, l driver.Locker, cut func()) {
	t.Helper()
	ctx := t.Context()
	held := driver.NewOwner()
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "held", Owner: held, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	other := driver.NewOwner()
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "other", Owner: other, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, _, err := l.Inspect(ctx, "held"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := l.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	cut()
	steps := []struct {
		name string
		do   func() error
	}{
		{"Release", func() error { return l.Release(ctx, "held", held) }},
		{"Acquire", func() error {
			_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "new", Owner: driver.NewOwner(), TTL: time.Minute})
			return err
		}},
		{"Inspect", func() error { _, _, err := l.Inspect(ctx, "other"); return err }},
		{"Renew", func() error {
			b := []driver.Renewal{{Key: "other", Owner: other, TTL: time.Minute}}
			l.Renew(ctx, b)
			return b[0].Err
		}},
		{"Ping", func() error { return l.Ping(ctx) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Errorf("%s after the idle connections were closed: %v", s.name, err)
		}
	}
}

// TestIdleConnectionsClosedByServer: with the server's timeout (1 s)
// shorter than the pool's idle timeout, calls after an idle gap succeed,
// on the driver's pools (pipelined or not) and on the application's.
func TestIdleConnectionsClosedByServer(t *testing.T) {
	for _, tc := range []struct {
		name string
		conn func(c *cluster) (driver.Connector, error)
	}{
		{"dsn", func(c *cluster) (driver.Connector, error) { return redlock.NewConnector(c.dsn()) }},
		{"dsn pipeline=0", func(c *cluster) (driver.Connector, error) { return redlock.NewConnector(c.dsn("pipeline=0")) }},
		{"dsn pipe always", func(c *cluster) (driver.Connector, error) {
			return redlock.NewConnector(c.dsn(), redlock.WithPipeAlways())
		}},
		{"application pool", func(c *cluster) (driver.Connector, error) {
			addr := c.servers[0].Addr()
			pool := &redis.Pool{MaxIdle: 8, IdleTimeout: time.Hour, DialContext: func(ctx context.Context) (redis.Conn, error) {
				return redis.DialContext(ctx, "tcp", addr)
			}}
			c.t.Cleanup(func() { pool.Close() })
			return redlock.FromPools([]*redis.Pool{pool}, redlock.WithPrefix(c.prefix)), nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, startRedisArgs(t, 1, "--timeout", "1"))
			conn, err := tc.conn(c)
			idleCalls(t, connect(t, conn, err), func() { c.idleCut(t, 0) })
		})
	}
}

// TestIdleConnectionsCutByProxy: a proxy that closes the connections
// (its idle cut-off) costs no call, and the subscription comes back and
// wakes its waiters again.
func TestIdleConnectionsCutByProxy(t *testing.T) {
	c := startCluster(t, 1)
	p, err := chaos.NewProxy(c.servers[0].Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dsn := "redis://" + p.Addr() + "?prefix=" + c.prefix
	conn, err := redlock.NewConnector(dsn)
	l := connect(t, conn, err)
	wake := make(chan struct{}, 1)
	w := driver.NewOwner()
	stop, err := l.Watch("w", w, wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	<-wake // confirmed
	idleCalls(t, l, func() {
		p.CutServerSide()
		time.Sleep(50 * time.Millisecond) // the closes reach the client
	})
	select { // subscribed again after the cut, which wakes the watchers
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription did not come back within 10s of the cut")
	}
	other := c.locker()
	owner := driver.NewOwner()
	if _, err := acquire(t, other, "w", owner); err != nil {
		t.Fatal(err)
	}
	mustWaitLocked(t, l, "w", w)
	for len(wake) > 0 { // the last cut's resubscription
		<-wake
	}
	if err := other.Release(t.Context(), "w", owner); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up after a release, following the cut")
	}
}

// TestIdleLiveConnectionKept: the check of a connection that idled past a
// second keeps it when the server has not closed it: no new connection.
func TestIdleLiveConnectionKept(t *testing.T) {
	c := startCluster(t, 1)
	l := c.locker("pipeline=0")
	if _, _, err := l.Inspect(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	before := c.connectionsReceived(t, 0)
	time.Sleep(1200 * time.Millisecond)
	if _, _, err := l.Inspect(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	if n := c.connectionsReceived(t, 0) - before; n != 1 { // 1: c.do's own
		t.Errorf("%d connections made after an idle gap; want the pooled one used again", n-1)
	}
}

// connectionsReceived returns how many connections server i accepted,
// counting the one that asks.
func (c *cluster) connectionsReceived(t *testing.T, i int) int {
	t.Helper()
	info, err := redis.String(c.do(i, "INFO", "stats"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_connections_received:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatal("INFO stats has no total_connections_received")
	return 0
}
