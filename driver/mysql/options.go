package mysql

import (
	"fmt"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Option configures a Connector. The DSN parameters of the same names
// (mutexkit_...) set the same; options override them.
type Option func(*config)

type config struct {
	namespace   string
	stmtTimeout time.Duration // the reply deadline of every statement
	idleTimeout time.Duration // the sessions' wait_timeout
	serverWait  bool
	maxWaiters  int
	waitFor     time.Duration // one GET_LOCK wait in the server: whole seconds
	err         error         // the first bad option or parameter
}

// Defaults.
const (
	// DefaultStatementTimeout bounds every statement on a lock session: a
	// reply later than this gives the session up (its connection is
	// closed, which frees its locks on the server).
	DefaultStatementTimeout = 5 * time.Second

	// DefaultIdleTimeout is the wait_timeout of the lock sessions: how long
	// the server keeps an idle session, and so how long a client cut off
	// by the network keeps its locks on the server. Package mutex verifies
	// every session that holds a lease each heartbeat (1 s by default), so
	// a live holder's session is never idle that long.
	DefaultIdleTimeout = 60 * time.Second

	// MaxSessions is how many lock sessions a client's held keys share.
	MaxSessions = 4

	// DefaultMaxWaiters is how many keys a client waits for in the server
	// at once, each on a session of its own (see WithServerWait).
	DefaultMaxWaiters = 64
)

func defaultConfig() config {
	return config{
		stmtTimeout: DefaultStatementTimeout,
		idleTimeout: DefaultIdleTimeout,
		serverWait:  true,
		maxWaiters:  DefaultMaxWaiters,
		waitFor:     serverWaitFor,
	}
}

func (c *config) apply(opts []Option) {
	for _, o := range opts {
		o(c)
	}
}

func (c *config) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// replyTimeout is how long a statement's reply may take.
func (c *config) replyTimeout() time.Duration { return c.stmtTimeout }

// WithNamespace keeps this client's keys apart from other applications'
// on the same server: the lock name hashes it with the key (LockName).
func WithNamespace(ns string) Option { return func(c *config) { c.namespace = ns } }

// WithStatementTimeout bounds each statement on a lock session, from
// sending it to its reply (default 5 s; mutexkit_statement_timeout). A
// session whose statement runs over is given up.
func WithStatementTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail(fmt.Errorf("mysql: WithStatementTimeout(%v): want a positive duration: %w", d, driver.ErrInvalid))
			return
		}
		c.stmtTimeout = d
	}
}

// WithIdleTimeout sets the lock sessions' wait_timeout (default 60 s;
// mutexkit_idle_timeout), which bounds how long the server keeps the locks
// of a client cut off by the network. It must be longer than the client's
// heartbeat (mutex.WithHeartbeat), or an idle holder's session is ended
// by the server, and its leases are lost. Whole seconds, at least 2. A
// waiter session runs with at most driver.QueueHold and 3 s until a key has
// stayed on it for half that (waitidle.go).
func WithIdleTimeout(d time.Duration) Option {
	return func(c *config) {
		if d < 2*time.Second {
			c.fail(fmt.Errorf("mysql: WithIdleTimeout(%v): want at least 2s: %w", d, driver.ErrInvalid))
			return
		}
		c.idleTimeout = d
	}
}

// WithServerWait chooses how a waiting Lock waits (mutexkit_wait=server or
// poll). With true, the default, it waits in the server: GET_LOCK with a
// timeout on a session of its own, so the server queues waiters in
// arrival order and a release grants the key to the first of them, which
// the driver keeps for that waiter and wakes it. With false, waiters poll
// with GET_LOCK(name, 0) and package mutex's backoff.
func WithServerWait(on bool) Option { return func(c *config) { c.serverWait = on } }

// WithMaxWaiters caps the keys a client waits for in the server at once
// (default 64; mutexkit_max_waiters), each on a connection of its own;
// waits beyond it poll.
func WithMaxWaiters(n int) Option {
	return func(c *config) {
		if n < 0 {
			c.fail(fmt.Errorf("mysql: WithMaxWaiters(%d): want 0 or more: %w", n, driver.ErrInvalid))
			return
		}
		c.maxWaiters = n
	}
}

// fitReadTimeout keeps each GET_LOCK wait in the server inside
// go-sql-driver's readTimeout (0: none), with a second for the reply: a
// read deadline that ended the wait would close its session, and the
// waiter would lose its place. A readTimeout under 2 s leaves no room for
// a wait in the server, and is refused unless waiters poll.
func (c *config) fitReadTimeout(rt time.Duration) {
	if rt <= 0 || !c.serverWait {
		return
	}
	if rt < 2*time.Second {
		c.fail(fmt.Errorf("mysql: readTimeout %v leaves no room for a wait in the server: want 2s or more, or mutexkit_wait=poll: %w", rt, driver.ErrInvalid))
		return
	}
	c.waitFor = min(c.waitFor, (rt - time.Second).Truncate(time.Second))
}
