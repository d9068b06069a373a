package goredis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	redigo "github.com/gomodule/redigo/redis"
	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver/redlock/internal/backend"
)

// transport sends a node's commands through the application's client;
// concurrent single calls share round trips (batch.go). Replies and
// errors are turned into redigo's shapes, which package redlock parses
// (see backend).
type transport struct {
	c        redis.UniversalClient
	cc       *redis.ClusterClient // c, when it is one
	deadline bool                 // the call's deadline goes in its ctx: the client may heed it
	b        batcher
}

func newTransport(c redis.UniversalClient) *transport {
	// A *redis.Client made without ContextTimeoutEnabled bounds reads and
	// writes by its own timeouts alone, and a pool wait by PoolTimeout:
	// the ctx would cost allocations and change nothing but a wait for a
	// pool already exhausted.
	rc, ok := c.(*redis.Client)
	t := &transport{c: c, deadline: !ok || rc.Options().ContextTimeoutEnabled}
	t.cc, _ = c.(*redis.ClusterClient)
	t.b.t = t
	return t
}

// reply is the package's reply for one command of the transport. A
// cluster client reloads its slot map only on -MOVED or every minute
// (ClusterStateReloadInterval), and until then sends a dead master's
// slots to it, refused: a call that could not reach its node has it
// reload (in the background, at most every 200 ms), so that a failover's
// new master is found within a call or two.
//
// A -MOVED or -ASK left once the client's redirections (MaxRedirects) ran
// out is a slot on the move, which passes: it is reported as a failure to
// reach the node (driver.ErrUnavailable, tried again), not as the server's
// error reply.
func (t *transport) reply(v any, err error) (any, error) {
	v, err = reply(v, err)
	if err == nil || t.cc == nil {
		return v, err
	}
	var re redigo.Error
	switch {
	case !errors.As(err, &re):
		t.cc.ReloadState(context.Background())
	case moved(err):
		err = fmt.Errorf("goredis: a slot moving: redirections ran out: %s", err)
	}
	return v, err
}

// bound puts deadline in ctx when the client may heed it.
func (t *transport) bound(ctx context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	if !t.deadline {
		return ctx, func() {}
	}
	if dl, ok := ctx.Deadline(); ok && !dl.After(deadline) {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, deadline)
}

func (t *transport) Do(ctx context.Context, deadline time.Time, cmd string, args []any) (any, error) {
	return t.b.do(ctx, deadline, argv(cmd, args))
}

// do sends one command alone.
func (t *transport) do(ctx context.Context, deadline time.Time, argv []any) (any, error) {
	ctx, cancel := t.bound(ctx, deadline)
	defer cancel()
	c := t.c.Do(ctx, argv...)
	return t.reply(c.Val(), c.Err())
}

func (t *transport) DoAll(ctx context.Context, deadline time.Time, cmds []backend.Cmd, out []backend.Result) {
	ctx, cancel := t.bound(ctx, deadline)
	defer cancel()
	p := t.c.Pipeline()
	rs := make([]*redis.Cmd, len(cmds))
	for i, c := range cmds {
		if t.cc != nil && c.Name == "CONFIG" {
			continue // everyMaster's, below
		}
		rs[i] = p.Do(ctx, argv(c.Name, c.Args)...)
	}
	p.Exec(ctx) // each command's error is its own
	for i, r := range rs {
		if r == nil {
			out[i].Reply, out[i].Err = t.everyMaster(ctx, argv(cmds[i].Name, cmds[i].Args))
			continue
		}
		out[i].Reply, out[i].Err = t.reply(r.Val(), r.Err())
	}
}

// everyMaster sends a CONFIG GET (Ping's maxmemory-policy check) to every
// master of the cluster, not to the one node a keyless command would go
// to, and returns their name-value pairs one after another: a policy that
// evicts lock keys on any master is seen. A master that refuses CONFIG
// (ACLs, a renamed command) adds nothing, as a single server that does is
// not failed for it; one that cannot be reached fails the reply.
func (t *transport) everyMaster(ctx context.Context, argv []any) (any, error) {
	var mu sync.Mutex
	var pairs []any
	err := t.cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		v, err := reply(c.Do(ctx, argv...).Result())
		if refused := redigo.Error(""); errors.As(err, &refused) {
			return nil
		}
		kv, _ := v.([]any)
		mu.Lock()
		defer mu.Unlock()
		pairs = append(pairs, kv...)
		return err
	})
	if err != nil {
		return t.reply(nil, err)
	}
	return pairs, nil
}

// Close waits for the batches under way (each bounded by its deadline)
// and leaves the client alone: it is the application's.
func (t *transport) Close() { t.b.wait() }

// argv is a command and its arguments as go-redis takes them.
func argv(cmd string, args []any) []any {
	a := make([]any, 1+len(args))
	a[0] = cmd
	copy(a[1:], args)
	return a
}

// reply turns go-redis's reply into redigo's shapes: a nil reply is nil,
// not an error; a bulk string is []byte; a RESP3 map is a flat array, a
// boolean 1 or nil (as RESP2 gives Lua's true and false); a server's
// error is a redigo redis.Error.
func reply(v any, err error) (any, error) {
	switch {
	case errors.Is(err, redis.Nil):
		return nil, nil
	case err != nil:
		var re redis.Error
		if errors.As(err, &re) {
			return nil, redigo.Error(re.Error())
		}
		return nil, err
	}
	return conv(v), nil
}

func conv(v any) any {
	switch v := v.(type) {
	case string:
		return []byte(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = conv(e)
		}
		return out
	case map[any]any:
		out := make([]any, 0, 2*len(v))
		for k, e := range v {
			out = append(out, conv(k), conv(e))
		}
		return out
	case bool:
		if v {
			return int64(1)
		}
		return nil
	}
	return v
}
