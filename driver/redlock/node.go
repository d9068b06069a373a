package redlock

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mutexkit/mutexkit/driver/redlock/internal/backend"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/pipeline"
)

// node is one Redis server: the transport its calls take, and a way to
// dial a connection of its own for the subscription.
type node struct {
	name string // host:port, or "pool N" for an application's pool; never credentials
	t    transport
	sub  func(context.Context) (backend.Sub, error) // nil: no subscription (no dial function known)

	noSetGet atomic.Bool // the server refused SET with NX and GET (before Redis 7.0): acquire by script
}

// deadlineFor bounds a call to timeout from now and to ctx's deadline. ok
// is false when ctx has no time left (then the call fails with
// context.DeadlineExceeded: ctx.Err() may not be set yet).
func deadlineFor(ctx context.Context, timeout time.Duration) (time.Time, bool) {
	now := time.Now()
	deadline := now.Add(timeout)
	if dl, has := ctx.Deadline(); has && dl.Before(deadline) {
		if !dl.After(now) {
			return dl, false
		}
		deadline = dl
	}
	return deadline, true
}

// do runs one call on n within timeout: one round trip, two if the
// server lost a script from its cache (NOSCRIPT: sent again as EVAL).
func (n *node) do(ctx context.Context, timeout time.Duration, c call) (any, error) {
	deadline, ok := deadlineFor(ctx, timeout)
	if !ok {
		return nil, n.fail(ctx, context.DeadlineExceeded)
	}
	reply, err := n.t.do(ctx, deadline, c.name(), c.args)
	if c.noScript(err) {
		reply, err = n.t.do(ctx, deadline, "EVAL", c.evalArgs())
	}
	if err != nil {
		return nil, n.fail(ctx, err)
	}
	return reply, nil
}

// pipeline runs calls on n in one round trip, plus one more for those the
// server answered NOSCRIPT (sent again as EVAL).
func (n *node) pipeline(ctx context.Context, timeout time.Duration, calls []call) []result {
	out := make([]result, len(calls))
	if len(calls) == 0 {
		return out
	}
	deadline, ok := deadlineFor(ctx, timeout)
	if !ok {
		failAll(out, n.fail(ctx, context.DeadlineExceeded))
		return out
	}
	cmds := make([]pipeline.Cmd, len(calls))
	for i, c := range calls {
		cmds[i] = pipeline.Cmd{Name: c.name(), Args: c.args}
	}
	n.t.doAll(ctx, deadline, cmds, out)
	redo(cmds, out, func(i int) bool { return calls[i].noScript(out[i].Err) }, func(i int) pipeline.Cmd {
		return pipeline.Cmd{Name: "EVAL", Args: calls[i].evalArgs()}
	}, func(cmds []pipeline.Cmd, out []result) {
		n.t.doAll(ctx, deadline, cmds, out)
	})
	n.classify(ctx, out)
	return out
}

// doCmds runs plain commands (no script: nothing to send again as EVAL)
// on n in one round trip, in slices the caller owns: out[i] is cmds[i]'s.
func (n *node) doCmds(ctx context.Context, timeout time.Duration, cmds []pipeline.Cmd, out []result) {
	deadline, ok := deadlineFor(ctx, timeout)
	if !ok {
		failAll(out, n.fail(ctx, context.DeadlineExceeded))
		return
	}
	n.t.doAll(ctx, deadline, cmds, out)
	n.classify(ctx, out)
}

// classify turns the errors in out into the driver's (fail).
func (n *node) classify(ctx context.Context, out []result) {
	for i := range out {
		if out[i].Err != nil {
			out[i].Err = n.fail(ctx, out[i].Err)
		}
	}
}

// pingCmds are ping's commands, sent in one round trip.
var pingCmds = []pipeline.Cmd{{Name: "PING"}, {Name: "CONFIG", Args: []any{"GET", "maxmemory-policy"}}}

// ping sends PING and CONFIG GET maxmemory-policy in one round trip, and
// fails n if the server may evict lock keys. A server that refuses CONFIG
// (ACLs, managed services) is not failed for it.
func (n *node) ping(ctx context.Context, timeout time.Duration) error {
	deadline, ok := deadlineFor(ctx, timeout)
	if !ok {
		return n.fail(ctx, context.DeadlineExceeded)
	}
	var out [2]result
	n.t.doAll(ctx, deadline, pingCmds, out[:])
	switch {
	case out[0].Err != nil:
		return n.fail(ctx, out[0].Err)
	case out[1].Err != nil && !isReplyError(out[1].Err):
		return n.fail(ctx, out[1].Err)
	}
	// Name-value pairs: one, or a cluster's masters' one after another.
	kv, _ := out[1].Reply.([]any)
	for i := 1; i < len(kv); i += 2 {
		if p, _ := kv[i].([]byte); evicts(string(p)) {
			return fmt.Errorf("redis %s: maxmemory-policy is %s: under memory pressure the server may evict lock keys, silently freeing held locks; set it to noeviction", n.name, p)
		}
	}
	return nil
}

// evicts reports whether a maxmemory-policy may evict keys that have a
// TTL, as every lock key has.
func evicts(policy string) bool {
	return strings.HasPrefix(policy, "allkeys-") || strings.HasPrefix(policy, "volatile-")
}
