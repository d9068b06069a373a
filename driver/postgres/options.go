package postgres

import (
	"fmt"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Defaults of the options below.
const (
	// DefaultStatementTimeout bounds every statement on a lock session on
	// the server (statement_timeout and lock_timeout), since no caller's
	// context is ever allowed to cancel one.
	DefaultStatementTimeout = 5 * time.Second

	// DefaultKeepaliveIdle, DefaultKeepaliveInterval and
	// DefaultKeepaliveCount are the TCP keepalive settings of lock
	// sessions, on both ends: a client cut off by the network loses its
	// locks on the server after about Idle + Interval*Count (20 s).
	DefaultKeepaliveIdle     = 5 * time.Second
	DefaultKeepaliveInterval = 5 * time.Second
	DefaultKeepaliveCount    = 3

	// DefaultMaxKeys caps the keys one client holds at once; the cap is
	// lowered to half the server's lock table when that is smaller (see
	// WithMaxKeys).
	DefaultMaxKeys = 4096

	// MaxSessions is how many lock sessions (server connections) one
	// client's held keys share.
	MaxSessions = 4

	// MaxWaiters is how many waiter sessions (server connections) one
	// client has in use at once: each waits in the server's lock queue for
	// a key, and then holds the key it got until it is released. A client
	// keeps two more, idle, for its next waits. A Lock beyond it polls (see
	// wait.go), and is served only once the server's queue for the key is
	// empty.
	MaxWaiters = 16
)

// Option configures a Connector. Options given to NewConnector override the
// same settings in its DSN. A bad option is recorded, and reported by
// NewConnector, or by Connect for FromDB.
type Option func(*config)

type config struct {
	namespace   string
	stmtTimeout time.Duration
	keepIdle    time.Duration
	keepIntvl   time.Duration
	keepCount   int
	maxKeys     int           // 0: DefaultMaxKeys or half the server's lock table
	serverWait  time.Duration // lock_timeout of a wait in the server (tests shorten it)
	err         error         // the first bad option
}

func defaultConfig() config {
	return config{
		stmtTimeout: DefaultStatementTimeout,
		keepIdle:    DefaultKeepaliveIdle,
		keepIntvl:   DefaultKeepaliveInterval,
		keepCount:   DefaultKeepaliveCount,
		serverWait:  serverWaitFor,
	}
}

func (c *config) apply(opts []Option) {
	for _, o := range opts {
		if o != nil {
			o(c)
		}
	}
}

func (c *config) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("postgres: "+format+": %w", append(args, driver.ErrInvalid)...)
	}
}

// WithNamespace sets the namespace keys are hashed in (see KeyID), so that
// applications sharing a database keep apart. Default "".
func WithNamespace(ns string) Option { return func(c *config) { c.namespace = ns } }

// WithStatementTimeout sets the server-side bound of every statement on a
// lock session (statement_timeout and lock_timeout; default
// DefaultStatementTimeout). Plus half a second for the network, it is also
// the client's reply deadline: a session whose server sends no reply within
// it is given up, and every lease on it is lost.
func WithStatementTimeout(d time.Duration) Option {
	return func(c *config) {
		if d < 100*time.Millisecond || d > time.Hour {
			c.fail("statement timeout %v outside [100ms, 1h]", d)
			return
		}
		c.stmtTimeout = d
	}
}

// WithKeepalive sets the TCP keepalive of lock sessions: idle time before
// the first probe, interval between probes, and unanswered probes before the
// connection is dropped, in whole seconds. They are set on the server side
// of each session (tcp_keepalives_idle, _interval, _count and
// tcp_user_timeout), so the server drops a cut-off client's session and
// frees its locks after about idle + interval*count, and, for connections
// this driver dials, on the client's socket too.
func WithKeepalive(idle, interval time.Duration, count int) Option {
	return func(c *config) {
		if idle < time.Second || interval < time.Second || count < 1 || idle > time.Hour || interval > time.Hour || count > 100 {
			c.fail("keepalive idle %v, interval %v, count %d: want at least 1s, 1s, 1", idle, interval, count)
			return
		}
		c.keepIdle, c.keepIntvl, c.keepCount = idle.Truncate(time.Second), interval.Truncate(time.Second), count
	}
}

// WithMaxKeys caps how many keys one client (one Locker) holds at once; an
// acquisition beyond it fails with an error matching ErrTooManyKeys. The
// server's advisory locks share one lock table with every other lock of
// every session (max_locks_per_transaction x (max_connections +
// max_prepared_transactions) entries), and filling it breaks locking for
// everyone. By default the cap is DefaultMaxKeys, or half that table when
// smaller.
func WithMaxKeys(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.fail("max keys %d: want at least 1", n)
			return
		}
		c.maxKeys = n
	}
}
