package redlock

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Name is the name the driver registers under.
const Name = "redis"

func init() {
	mutex.Register("redis", Driver{})
	mutex.Register("rediss", Driver{})
}

// Driver opens connectors from DSNs: see the package documentation.
type Driver struct{}

// OpenConnector parses dsn without any I/O. A malformed DSN gives an error
// matching driver.ErrInvalid that never contains the password.
func (Driver) OpenConnector(dsn string) (driver.Connector, error) {
	return OpenConnector(dsn)
}

// OpenConnector is Driver.OpenConnector with Options, for what a DSN cannot
// say (a *tls.Config). Options override the DSN's.
func OpenConnector(dsn string, opts ...Option) (driver.Connector, error) {
	cfg, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	if err := cfg.apply(opts); err != nil {
		return nil, err
	}
	return &connector{cfg: cfg}, nil
}

// NewConnector returns a Connector over the application's own redigo
// pools: one pool for a single-instance lock, three or more independent
// servers for Redlock. The Lockers it makes share the pools and never
// close them. Waiters are woken by a subscription on a connection of each
// pool's own (made with the pool's Dial or DialContext function, outside
// the pool); a pool with neither is polled instead. Calls are not
// pipelined (WithPipeline has no effect): each takes a connection of its
// pool, whose dial function may set up what a shared pipelined connection
// cannot live with (a read timeout ends an idle reader). A call that fails
// because the server had closed the connection the pool gave (its
// timeout, a proxy's idle cut-off) is tried once more on a connection of
// the pool's dial function; the pool's own TestOnBorrow, if any, still
// applies.
//
// Use it with mutex.OpenConnector.
func NewConnector(pools []*redis.Pool, opts ...Option) (driver.Connector, error) {
	if err := checkNodeCount(len(pools)); err != nil {
		return nil, fmt.Errorf("redlock: NewConnector: %d pools: %w", len(pools), err)
	}
	for i, p := range pools {
		if p == nil {
			return nil, fmt.Errorf("redlock: NewConnector: pool %d is nil: %w", i, driver.ErrInvalid)
		}
	}
	cfg := defaultConfig()
	if err := cfg.apply(opts); err != nil {
		return nil, err
	}
	return &connector{cfg: cfg, pools: pools}, nil
}

type connector struct {
	cfg   config
	pools []*redis.Pool // the application's; nil: the driver dials cfg.addrs
}

func (c *connector) DriverName() string { return Name }

// Connect makes a Locker. It does no I/O: connections are made on first
// use. With a DSN each Locker has pools of its own, closed with it.
func (c *connector) Connect(ctx context.Context) (driver.Locker, error) {
	cfg := c.cfg
	var nodes []*node
	if c.pools != nil {
		for i, p := range c.pools {
			n := &node{name: fmt.Sprintf("pool %d", i), pool: p}
			switch {
			case p.DialContext != nil:
				n.dial = p.DialContext
			case p.Dial != nil:
				n.dial = func(context.Context) (redis.Conn, error) { return p.Dial() }
			}
			nodes = append(nodes, n)
		}
		return newLocker(&cfg, nodes), nil
	}
	opts, err := cfg.dialOptions(false)
	if err != nil {
		return nil, err
	}
	var pipeOpts []redis.DialOption
	if cfg.pipeConns > 0 {
		if pipeOpts, err = cfg.pipeDialOptions(); err != nil {
			return nil, err
		}
	}
	for _, addr := range cfg.addrs {
		dial := cfg.pooledDial(addr, opts)
		n := &node{
			name: addr,
			own:  true,
			dial: dial,
			pool: &redis.Pool{
				DialContext:  dial,
				TestOnBorrow: testOnBorrow, // a connection idle for a second or more (idle.go)
				MaxIdle:      cfg.maxIdle,
				MaxActive:    cfg.maxActive,
				Wait:         cfg.maxActive > 0,
				IdleTimeout:  cfg.idleTimeout,
			},
		}
		if cfg.pipeConns > 0 {
			n.pipe = newPipe(cfg.pipeConns, cfg.pipeDial(addr, pipeOpts))
			n.solo = !cfg.pipeAlways
		}
		nodes = append(nodes, n)
	}
	return newLocker(&cfg, nodes), nil
}

// pooledDial returns the dial function of a node's pooled connections
// (and of its subscription). The bound covers the whole dial: connect,
// TLS, and the AUTH, SELECT and CLIENT SETNAME round trips a paused server
// never answers. Each connection keeps its socket, which the pool checks
// after it idled (idle.go).
func (cfg *config) pooledDial(addr string, opts []redis.DialOption) func(context.Context) (redis.Conn, error) {
	dialer := &net.Dialer{Timeout: cfg.connectTimeout, KeepAlive: 5 * time.Minute}
	connectTimeout := cfg.connectTimeout
	return func(ctx context.Context) (redis.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		var nc net.Conn
		netDial := redis.DialContextFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			nc = c
			return c, err
		})
		conn, err := redis.DialContext(ctx, "tcp", addr, append(opts[:len(opts):len(opts)], netDial)...)
		if err != nil {
			return nil, err
		}
		cwt, ok := conn.(redis.ConnWithTimeout)
		if !ok {
			return conn, nil
		}
		return &checkedConn{ConnWithTimeout: cwt, nc: nc}, nil
	}
}

// pipeDialOptions are dialOptions without redigo's read and write
// timeouts: a pipelined connection sets its socket's deadlines itself.
func (cfg *config) pipeDialOptions() ([]redis.DialOption, error) {
	return cfg.dialOptions(true)
}

// pipeDial returns the dial function of a node's pipelined connections:
// TLS, AUTH, SELECT and CLIENT SETNAME as for pooled ones, all within
// connect_timeout and the caller's deadline, over a socket the pipe can
// manage (pipeNetConn).
func (cfg *config) pipeDial(addr string, opts []redis.DialOption) func(context.Context) (redis.Conn, *pipeNetConn, error) {
	dialer := &net.Dialer{KeepAlive: 5 * time.Minute}
	wrap := cfg.wrapConn
	connectTimeout := cfg.connectTimeout
	return func(ctx context.Context) (redis.Conn, *pipeNetConn, error) {
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		var nc *pipeNetConn
		netDial := redis.DialContextFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if wrap != nil {
				c = wrap(c)
			}
			nc = &pipeNetConn{Conn: c}
			return nc, nil
		})
		conn, err := redis.DialContext(ctx, "tcp", addr, append(opts[:len(opts):len(opts)], netDial)...)
		if err != nil {
			return nil, nil, err
		}
		return conn, nc, nil
	}
}

// dialOptions turns the configuration into redigo's; for a pipelined
// connection without a write timeout, as the pipe sets the socket's
// deadlines itself. Reading a CA file is the only I/O, and it is local.
func (cfg *config) dialOptions(pipelined bool) ([]redis.DialOption, error) {
	opts := []redis.DialOption{
		redis.DialConnectTimeout(cfg.connectTimeout),
		redis.DialTLSHandshakeTimeout(cfg.connectTimeout),
		redis.DialClientName("mutexkit"),
	}
	if cfg.password != "" {
		opts = append(opts, redis.DialPassword(cfg.password))
		if cfg.user != "" {
			opts = append(opts, redis.DialUsername(cfg.user))
		}
	}
	if cfg.db != 0 {
		opts = append(opts, redis.DialDatabase(cfg.db))
	}
	if !pipelined { // pooled connections: redigo bounds each write
		opts = append(opts, redis.DialWriteTimeout(cfg.connectTimeout))
	}
	if !cfg.useTLS {
		return opts, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.tlsConfig != nil {
		tc = cfg.tlsConfig.Clone()
	}
	if cfg.tlsServerName != "" {
		tc.ServerName = cfg.tlsServerName
	}
	if cfg.tlsSkipVerify {
		tc.InsecureSkipVerify = true
	}
	if cfg.tlsCAFile != "" {
		pem, err := os.ReadFile(cfg.tlsCAFile)
		if err != nil {
			return nil, fmt.Errorf("redlock: tls_ca: %w: %w", driver.ErrInvalid, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redlock: tls_ca %s: no PEM certificate: %w", cfg.tlsCAFile, driver.ErrInvalid)
		}
		tc.RootCAs = pool
	}
	return append(opts, redis.DialUseTLS(true), redis.DialTLSConfig(tc)), nil
}

// Option configures a Connector beyond its DSN.
type Option func(*config) error

func (cfg *config) apply(opts []Option) error {
	for _, o := range opts {
		if err := o(cfg); err != nil {
			return fmt.Errorf("redlock: %w: %w", driver.ErrInvalid, err)
		}
	}
	return nil
}

// WithNodeTimeout bounds each node's answer to every call (DSN option
// timeout). By default an acquire or renewal waits a tenth of the TTL (at
// least 10ms) and other calls a second: a node slower than that counts as
// down.
func WithNodeTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("node timeout must be positive")
		}
		c.nodeTimeout = d
		return nil
	}
}

// WithDrift sets the clock drift allowed for a grant: factor of the TTL
// plus fixed (DSN options drift_factor and drift_fixed; 0.01 and 2ms by
// default). A grant's validity is its TTL less the drift.
func WithDrift(factor float64, fixed time.Duration) Option {
	return func(c *config) error {
		if factor < 0 || factor >= 0.5 || fixed < 0 {
			return errors.New("drift factor must be in [0, 0.5) and the fixed drift not negative")
		}
		c.driftFactor, c.driftFixed = factor, fixed
		return nil
	}
}

// WithPrefix sets the prefix of every Redis key and channel the driver
// uses (DSN option prefix; "mutexkit" by default).
func WithPrefix(prefix string) Option {
	return func(c *config) error {
		if prefix == "" {
			return errors.New("empty key prefix")
		}
		for _, r := range prefix {
			if r == '{' || r == '}' {
				return errors.New("key prefix with { or }: it would break the hash tag")
			}
		}
		c.prefix = prefix
		return nil
	}
}

// WithTLSConfig sets the TLS configuration of a rediss:// DSN. The DSN's
// tls_* options apply on top of it.
func WithTLSConfig(tc *tls.Config) Option {
	return func(c *config) error {
		c.tlsConfig = tc
		return nil
	}
}

// WithPipeline sets how many connections each node's calls are pipelined
// over (DSN option pipeline; 1 by default): calls from concurrent
// goroutines are queued and written together, sharing round trips. 0
// turns pipelining off: each call then takes a connection of the pool
// (see WithPool) for its round trip.
func WithPipeline(conns int) Option {
	return func(c *config) error {
		if conns < 0 || conns > maxPipelineConns {
			return fmt.Errorf("pipeline connections must be in [0, %d]", maxPipelineConns)
		}
		c.pipeConns = conns
		return nil
	}
}

// WithPool sizes the pools the driver makes for each node of a DSN: idle
// connections kept, connections open at most (0: no limit; then callers
// wait for a free one), and how long an idle one is kept (DSN options
// pool_max_idle, pool_max_active, pool_idle_timeout).
func WithPool(maxIdle, maxActive int, idleTimeout time.Duration) Option {
	return func(c *config) error {
		if maxIdle < 0 || maxActive < 0 || idleTimeout < 0 {
			return errors.New("negative pool size or timeout")
		}
		c.maxIdle, c.maxActive, c.idleTimeout = maxIdle, maxActive, idleTimeout
		return nil
	}
}
