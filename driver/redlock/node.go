package redlock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
)

// node is one Redis server: a pool of connections, and a way to dial a
// connection of its own for the subscription.
type node struct {
	name string // host:port, or "pool N" for an application's pool; never credentials
	pool *redis.Pool
	own  bool                                      // made by the driver: closed with the Locker
	dial func(context.Context) (redis.Conn, error) // nil: no subscription (no dial function known)
	pipe *pipe                                     // non-nil: concurrent calls are pipelined
	busy atomic.Int32                              // calls of do under way
	solo bool                                      // a call alone takes a pooled connection (not the pipe)

	noSetGet atomic.Bool // the server refused SET with NX and GET (before Redis 7.0): acquire by script
}

// call is one script invocation, or one plain command when s is nil. A
// script's args start with its hash and its key count.
type call struct {
	s    *script
	cmd  string // the plain command's name
	args []any
}

// name is the command c sends first.
func (c call) name() string {
	if c.s != nil {
		return "EVALSHA"
	}
	return c.cmd
}

// noScript reports whether err says the server lacks c's script.
func (c call) noScript(err error) bool { return c.s != nil && isNoScript(err) }

// newCall returns a call of s with room for n keys and arguments.
func newCall(s *script, n int) call {
	args := make([]any, 2, 2+n)
	args[0], args[1] = s.hashArg, s.nkeys
	return call{s: s, args: args}
}

// evalArgs returns the EVAL form of c's arguments.
func (c call) evalArgs() []any {
	args := make([]any, len(c.args))
	copy(args, c.args)
	args[0] = c.s.src
	return args
}

// timeoutFor bounds a call to d and to ctx's deadline. ok is false when
// ctx has no time left (then the call fails with context.DeadlineExceeded:
// ctx.Err() may not be set yet).
func timeoutFor(ctx context.Context, d time.Duration) (time.Duration, bool) {
	if dl, has := ctx.Deadline(); has {
		left := time.Until(dl)
		if left <= 0 {
			return 0, false
		}
		d = min(d, left)
	}
	return d, true
}

// do runs one call on n within timeout: one round trip, two if the
// server lost a script from its cache (NOSCRIPT: sent again as EVAL).
func (n *node) do(ctx context.Context, timeout time.Duration, c call) (any, error) {
	timeout, ok := timeoutFor(ctx, timeout)
	if !ok {
		return nil, n.fail(ctx, context.DeadlineExceeded)
	}
	if n.pipe != nil {
		// A call alone on the node takes a pooled connection: it writes and
		// reads itself, with no goroutine handoff. Calls that overlap
		// share the pipe's round trips.
		alone := n.busy.Add(1) == 1
		defer n.busy.Add(-1)
		if alone && n.solo {
			return n.doPooled(ctx, timeout, c)
		}
		deadline := time.Now().Add(timeout)
		reply, err := n.piped(ctx, deadline, c)
		if peerClosed(err) { // the connection broke: the pipe dials a new one (idle.go)
			reply, err = n.piped(ctx, deadline, c)
		}
		if err != nil {
			return nil, n.fail(ctx, err)
		}
		return reply, nil
	}
	return n.doPooled(ctx, timeout, c)
}

// piped is one try of c on n's pipe.
func (n *node) piped(ctx context.Context, deadline time.Time, c call) (any, error) {
	reply, err := n.pipe.do(ctx, deadline, c.name(), c.args)
	if c.noScript(err) {
		reply, err = n.pipe.do(ctx, deadline, "EVAL", c.evalArgs())
	}
	return reply, err
}

// doPooled is do on a connection of the pool; once more on a fresh one if
// the server had closed it (idle.go).
func (n *node) doPooled(ctx context.Context, timeout time.Duration, c call) (any, error) {
	start := time.Now()
	conn, err := n.get(ctx, timeout)
	if err != nil {
		return nil, n.fail(ctx, err)
	}
	reply, err := doOn(conn, timeout, c)
	conn.Close()
	if peerClosed(err) {
		if conn, err = n.fresh(ctx, timeout-time.Since(start)); err == nil {
			reply, err = doOn(conn, max(timeout-time.Since(start), time.Millisecond), c)
			conn.Close()
		}
	}
	if err != nil {
		return nil, n.fail(ctx, err)
	}
	return reply, nil
}

// doOn runs c on conn, sent again as EVAL if the server lost its script.
func doOn(conn redis.Conn, timeout time.Duration, c call) (any, error) {
	reply, err := redis.DoWithTimeout(conn, timeout, c.name(), c.args...)
	if c.noScript(err) {
		reply, err = redis.DoWithTimeout(conn, timeout, "EVAL", c.evalArgs()...)
	}
	return reply, err
}

// get takes a connection from the pool. When it may have to dial, the
// dial is bounded by timeout too: a node that cannot be reached within the
// call's bound is as good as down. (The context costs allocations, so the
// usual case, an idle connection at hand, goes without.)
func (n *node) get(ctx context.Context, timeout time.Duration) (redis.Conn, error) {
	if n.pool.IdleCount() == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return n.pool.GetContext(ctx)
}

// attempt is one acquire's commands: the plain SET, and the counter's key
// when the grant is fenced.
type attempt struct {
	set   call   // SET lock record NX PX ttl GET
	fence string // "" unfenced
}

// setCall returns the plain acquire, SET NX PX with GET: the server
// answers nil when it set the key, else the value there.
func setCall(lock, rec, ttlMs any) call {
	return call{cmd: "SET", args: []any{lock, rec, "NX", "PX", ttlMs, "GET"}}
}

// acquire asks n for a grant of a and returns its token (0 unfenced), or
// -1 when another owner holds the key, with that owner when the reply
// says (the fenced script does not: nil).
//
// An unfenced grant is the one SET where the server takes NX with GET
// (Redis 7.0 on): nil means granted, another owner's record held. The
// caller's own record, left by an earlier attempt of the same owner, goes
// on to the acquire script, which writes it again with this attempt's
// record and TTL. A fenced grant, and
// any grant from a server that refuses NX with GET, is the script alone.
// (The script costs Redis three to four times a SET.)
func (n *node) acquire(ctx context.Context, timeout time.Duration, a attempt) (token int64, holder []byte, err error) {
	lock, rec, ttl := a.set.args[0], a.set.args[1], a.set.args[4]
	if a.fence == "" && !n.noSetGet.Load() {
		reply, err := n.do(ctx, timeout, a.set)
		switch cur, isValue := reply.([]byte); {
		case err == nil && reply == nil:
			return 0, nil, nil
		case err == nil && !isValue:
			return 0, nil, fmt.Errorf("redis %s: unexpected reply %T to SET", n.name, reply)
		case err == nil && !sameOwner(cur, rec.(string)):
			return -1, ownerOf(cur), nil
		case err == nil: // our own grant: the script refreshes it
		case refusesSetGet(err):
			n.noSetGet.Store(true)
		default:
			return 0, nil, err
		}
	}
	var c call
	if a.fence != "" {
		c = newCall(fencedAcquireScript, 4)
		c.args = append(c.args, lock, a.fence, rec, ttl)
	} else {
		c = newCall(acquireScript, 3)
		c.args = append(c.args, lock, rec, ttl)
	}
	reply, err := n.do(ctx, timeout, c)
	if err != nil {
		return 0, nil, err
	}
	switch v := reply.(type) {
	case int64:
		return v, nil, nil
	case []byte: // another owner's record
		return -1, ownerOf(v), nil
	}
	return 0, nil, fmt.Errorf("redis %s: unexpected reply %T to acquire", n.name, reply)
}

// ownerOf returns the owner of a holder record: its first 32 bytes.
func ownerOf(rec []byte) []byte { return rec[:min(len(rec), ownerLen)] }

// sameOwner reports whether a lock's value is a record of rec's owner.
func sameOwner(cur []byte, rec string) bool {
	return len(cur) >= ownerLen && len(rec) >= ownerLen && string(cur[:ownerLen]) == rec[:ownerLen]
}

// refusesSetGet reports a server's refusal of SET with both NX and GET
// (before Redis 7.0: a syntax error).
func refusesSetGet(err error) bool {
	var e redis.Error
	return errors.As(err, &e) && strings.Contains(strings.ToLower(string(e)), "syntax error")
}

// result is one call's outcome.
type result struct {
	reply any
	err   error
	done  bool
}

// pipeline runs script calls on n in one round trip (Send each, Flush, Receive
// each), plus one more for those the server answered NOSCRIPT.
func (n *node) pipeline(ctx context.Context, timeout time.Duration, calls []call) []result {
	out := make([]result, len(calls))
	if len(calls) == 0 {
		return out
	}
	timeout, ok := timeoutFor(ctx, timeout)
	if !ok {
		return failAll(out, n.fail(ctx, context.DeadlineExceeded))
	}
	deadline := time.Now().Add(timeout)
	if n.pipe != nil {
		return n.pipelined(ctx, deadline, calls, out)
	}
	conn, err := n.get(ctx, timeout)
	if err != nil {
		return failAll(out, n.fail(ctx, err))
	}
	err = pipelineOn(conn, deadline, calls, out)
	conn.Close()
	if peerClosed(err) { // once more on a fresh connection (idle.go)
		clear(out)
		if conn, err = n.fresh(ctx, time.Until(deadline)); err == nil {
			err = pipelineOn(conn, deadline, calls, out)
			conn.Close()
		}
	}
	if err != nil {
		return failAll(out, n.fail(ctx, err))
	}
	for i := range out {
		if out[i].err != nil {
			out[i].err = n.fail(ctx, out[i].err)
		}
	}
	return out
}

// pipelineOn runs calls on conn, filling out with the replies and the
// server's errors, and returns the connection's error, if it failed.
func pipelineOn(conn redis.Conn, deadline time.Time, calls []call, out []result) error {
	todo := make([]int, len(calls))
	for i := range todo {
		todo[i] = i
	}
	cmd := "EVALSHA"
	for round := 0; len(todo) > 0; round++ {
		for _, i := range todo {
			args := calls[i].args
			if round > 0 {
				args = calls[i].evalArgs()
			}
			if err := conn.Send(cmd, args...); err != nil {
				return err
			}
		}
		if err := conn.Flush(); err != nil {
			return err
		}
		var again []int
		for _, i := range todo {
			reply, err := redis.ReceiveWithTimeout(conn, max(time.Until(deadline), time.Millisecond))
			switch {
			case round == 0 && isNoScript(err):
				again = append(again, i)
			case errors.As(err, new(redis.Error)):
				out[i] = result{err: err, done: true} // this call failed; the connection is fine
			case err != nil:
				return err
			default:
				out[i] = result{reply: reply, done: true}
			}
		}
		todo, cmd = again, "EVAL"
	}
	return nil
}

// pipelined is pipeline over n's pipe: the calls are queued together, so
// they go in one write when the connection is idle.
func (n *node) pipelined(ctx context.Context, deadline time.Time, calls []call, out []result) []result {
	cmds := make([]pcmd, len(calls))
	for i, c := range calls {
		cmds[i] = pcmd{"EVALSHA", c.args}
	}
	n.pipe.doAll(ctx, deadline, cmds, out)
	// Once more, for the calls the connection's end failed (idle.go), then
	// as EVAL for those whose script the server lost.
	n.pipeAgain(ctx, deadline, calls, out, peerClosed, "EVALSHA")
	n.pipeAgain(ctx, deadline, calls, out, isNoScript, "EVAL")
	for i := range out {
		if out[i].err != nil {
			out[i].err = n.fail(ctx, out[i].err)
		}
	}
	return out
}

// pipeAgain sends again, as cmd, the calls of out whose error matches.
func (n *node) pipeAgain(ctx context.Context, deadline time.Time, calls []call, out []result, match func(error) bool, cmd string) {
	var again []int
	for i := range out {
		if match(out[i].err) {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return
	}
	cmds := make([]pcmd, 0, len(again))
	for _, i := range again {
		args := calls[i].args
		if cmd == "EVAL" {
			args = calls[i].evalArgs()
		}
		cmds = append(cmds, pcmd{cmd, args})
	}
	res := make([]result, len(again))
	n.pipe.doAll(ctx, deadline, cmds, res)
	for k, i := range again {
		out[i] = res[k]
	}
}

// failAll sets err on every result not yet done.
func failAll(out []result, err error) []result {
	for i := range out {
		if !out[i].done {
			out[i] = result{err: err, done: true}
		}
	}
	return out
}

func isNoScript(err error) bool {
	if err == nil {
		return false // before errors.As, whose target would escape
	}
	var e redis.Error
	return errors.As(err, &e) && strings.HasPrefix(string(e), "NOSCRIPT")
}

// fail wraps an error of n: it names the node, matches ctx's error when
// ctx ended, driver.ErrDenied when the server refused the client's
// credentials or configuration, and driver.ErrUnavailable unless the
// server answered with another error of its own (wrong type, out of
// memory...).
func (n *node) fail(ctx context.Context, err error) error {
	var reply redis.Error
	ctxErr := ctx.Err()
	if dl, ok := ctx.Deadline(); ok && ctxErr == nil && !time.Now().Before(dl) {
		ctxErr = context.DeadlineExceeded // reached, though ctx may not say so yet
	}
	switch {
	case ctxErr != nil && errors.Is(err, ctxErr):
		return fmt.Errorf("redis %s: %w", n.name, err)
	case ctxErr != nil:
		return fmt.Errorf("redis %s: %w: %w", n.name, ctxErr, err)
	case notRedis(err):
		return &notRedisError{node: n.name, err: err}
	case errors.As(err, &reply) && deniedReply(reply):
		return fmt.Errorf("redis %s: %w: %w", n.name, driver.ErrDenied, err)
	case errors.As(err, &reply) && !transientReply(reply):
		return fmt.Errorf("redis %s: %w", n.name, err)
	}
	return fmt.Errorf("redis %s: %w: %w", n.name, driver.ErrUnavailable, err)
}

// notRedis reports an answer that is not Redis's: a reply redigo could
// not parse (an HTTP port, another service), or a server that did not
// answer TLS to a rediss:// DSN.
func notRedis(err error) bool {
	var rh tls.RecordHeaderError
	return errors.As(err, &rh) || strings.HasSuffix(err.Error(), "(possible server error or unsupported concurrent read by application)")
}

// notRedisError says that the server at a node's address does not speak
// Redis: the address is wrong, or TLS is (a configuration error, so
// driver.ErrDenied). It names the node, never the password, and keeps
// redigo's error reachable, unprinted: its text blames a concurrent read.
type notRedisError struct {
	node string
	err  error
}

func (e *notRedisError) Error() string {
	return fmt.Sprintf("redis %s: the server did not answer as Redis does (is it a Redis port? a TLS one needs rediss://, a plain one redis://): %v", e.node, driver.ErrDenied)
}

func (e *notRedisError) Unwrap() []error { return []error{driver.ErrDenied, e.err} }

// deniedReply reports the server's refusals of the client's credentials
// or configuration: a wrong password or user, none given, a command or key
// the user's ACL does not allow, a database index the server does not
// have, a server in protected mode. Waiting does not change them.
func deniedReply(e redis.Error) bool {
	s := string(e)
	for _, p := range []string{"WRONGPASS", "NOAUTH", "NOPERM", "DENIED"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	if !strings.HasPrefix(s, "ERR ") {
		return false
	}
	s = strings.ToLower(s)
	for _, m := range []string{
		"db index is out of range", "invalid db index", // SELECT
		"invalid password", "no password is set", "without any password configured", // AUTH, before and since Redis 6
		"select is not allowed in cluster mode",
		"user executing the script can't", // a command, key or channel of a script the ACL forbids
	} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// transientReply reports server errors that pass by themselves.
func transientReply(e redis.Error) bool {
	for _, p := range []string{"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "READONLY"} {
		if strings.HasPrefix(string(e), p) {
			return true
		}
	}
	return false
}

func receive(conn redis.Conn, timeout time.Duration) (any, error) {
	return redis.ReceiveWithTimeout(conn, timeout)
}

// isReplyError reports an error the server answered, rather than a
// failure to reach it.
func isReplyError(err error) bool {
	var e redis.Error
	return errors.As(err, &e)
}
