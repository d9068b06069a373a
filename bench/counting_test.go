package bench

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

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

// scriptCalls returns how many scripts (EVAL, EVALSHA) the server has run.
func scriptCalls(b testing.TB, admin redis.Conn) int64 {
	return commandCalls(b, admin, "evalsha", "eval")
}

// commandCalls returns how many of the named commands the server has run,
// from INFO commandstats. Commands scripts run count too: name only those
// a client sends itself.
func commandCalls(b testing.TB, admin redis.Conn, names ...string) int64 {
	info, err := redis.String(admin.Do("INFO", "commandstats"))
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		_, rest, _ = strings.Cut(rest, "calls=")
		calls, _, _ := strings.Cut(rest, ",")
		n, _ := strconv.ParseInt(calls, 10, 64)
		total += n
	}
	return total
}

// clientCount returns the server's connected clients.
func clientCount(b testing.TB, admin redis.Conn) int {
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
