package redlock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/pipeline"
)

var errClosed = fmt.Errorf("redlock: %w", driver.ErrClosed)

// errLocked is a refusal on one node, or of a waiter its Locker knows is
// still queued (queue.go).
var errLocked = fmt.Errorf("redlock: %w", driver.ErrLocked)

func errHeld(held, n int) error {
	if n == 1 {
		return errLocked
	}
	return fmt.Errorf("redlock: held elsewhere on %d of %d nodes: %w", held, n, driver.ErrLocked)
}

func errTooSlow(elapsed, validity time.Duration) error {
	return fmt.Errorf("redlock: acquire took %v, longer than the grant's validity %v; released: %w", elapsed.Round(time.Millisecond), validity, driver.ErrUnavailable)
}

func errNoValidity(ttl time.Duration) error {
	return fmt.Errorf("redlock: TTL %v leaves no validity after clock drift: %w", ttl, driver.ErrInvalid)
}

// nodesError says which nodes failed and why. It matches each node's
// error, driver.ErrUnavailable among them when a node was unreachable.
type nodesError struct {
	op     string
	failed int
	n      int
	quorum int
	held   int // nodes where another owner held the key (acquire)
	errs   []error
}

func (e *nodesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redlock: %s: %d of %d nodes failed", e.op, e.failed, e.n)
	switch {
	case e.n > 1 && e.held > 0:
		fmt.Fprintf(&b, " (a quorum is %d; held elsewhere on %d)", e.quorum, e.held)
	case e.n > 1:
		fmt.Fprintf(&b, " (a quorum is %d)", e.quorum)
	}
	for i, err := range e.errs {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *nodesError) Unwrap() []error { return e.errs }

func (l *locker) quorumError(op string, errs []error) *nodesError {
	return &nodesError{op: op, failed: len(errs), n: len(l.nodes), quorum: l.quorum, errs: errs}
}

// fail wraps an error of n: it names the node, matches ctx's error when
// ctx ended, driver.ErrDenied when the server refused the client's
// credentials or configuration, driver.ErrClosed when the Locker closed
// under the call, and driver.ErrUnavailable unless the server answered
// with another error of its own (wrong type, out of memory...).
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
	case errors.Is(err, pipeline.ErrClosed):
		return fmt.Errorf("redis %s: %w: %w", n.name, driver.ErrClosed, err)
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
// wrongType reports a WRONGTYPE reply (a command's, or one inside a
// script's error): the key holds a value of another type.
func wrongType(err error) bool {
	var e redis.Error
	return errors.As(err, &e) && strings.Contains(string(e), "WRONGTYPE")
}

func transientReply(e redis.Error) bool {
	for _, p := range []string{"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "READONLY"} {
		if strings.HasPrefix(string(e), p) {
			return true
		}
	}
	return false
}

// isReplyError reports an error the server answered, rather than a
// failure to reach it.
func isReplyError(err error) bool {
	var e redis.Error
	return errors.As(err, &e)
}
