package redlock

import (
	"context"
	"fmt"
	"slices"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/backend"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/pipeline"
	"github.com/mutexkit/mutexkit/mutex"
)

// Name is the name the driver registers under, and its DriverName.
const Name = "redis"

func init() {
	mutex.Register("redis", Driver{})
	mutex.Register("rediss", Driver{})
}

// Driver opens connectors from DSNs: see the package documentation.
type Driver struct{}

// OpenConnector is NewConnector without Options.
func (Driver) OpenConnector(dsn string) (driver.Connector, error) {
	return NewConnector(dsn)
}

// NewConnector parses dsn without any I/O, and applies opts, for what a
// DSN cannot say (a *tls.Config); they override the DSN's options. A
// malformed DSN or a bad Option gives an error matching driver.ErrInvalid
// that never contains the password.
func NewConnector(dsn string, opts ...Option) (driver.Connector, error) {
	cfg, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	cfg.apply(opts)
	if cfg.err != nil {
		return nil, cfg.err
	}
	return &connector{cfg: cfg}, nil
}

// FromPools returns a Connector over the application's own redigo pools:
// one pool for a single-instance lock, three or more independent servers
// for Redlock. A wrong number of pools, a nil pool or a bad Option is
// reported by Connect, matching driver.ErrInvalid.
//
// The Lockers it makes share the pools and never close them. Waiters are
// woken by a subscription on a connection of each pool's own (made with
// the pool's Dial or DialContext function, outside the pool); a pool with
// neither is polled instead. Calls are not pipelined (WithPipeline has no
// effect): each takes a connection of its pool, whose dial function may
// set up what a shared pipelined connection cannot live with (a read
// timeout ends an idle reader). A call that fails because the server had
// closed the connection the pool gave (its timeout, a proxy's idle
// cut-off) is tried once more on a connection of the pool's dial
// function; the pool's own TestOnBorrow, if any, still applies.
//
// Pass it to mutex.NewClient.
func FromPools(pools []*redis.Pool, opts ...Option) driver.Connector {
	cfg := defaultConfig()
	if err := checkNodeCount(len(pools)); err != nil {
		cfg.fail(fmt.Errorf("FromPools: %d pools: %w", len(pools), err))
	}
	if i := slices.Index(pools, nil); i >= 0 {
		cfg.fail(fmt.Errorf("FromPools: pool %d is nil", i))
	}
	cfg.apply(opts)
	return &connector{cfg: cfg, pools: slices.Clone(pools)}
}

type connector struct {
	cfg      config
	pools    []*redis.Pool                  // the application's; nil: the driver dials cfg.addrs
	external func() ([]backend.Node, error) // another module's nodes (external.go)
}

func (c *connector) DriverName() string { return Name }

// Connect makes a Locker. It does no I/O: connections are made on first
// use. With a DSN each Locker has pools (and pipes) of its own, closed
// with it. Here, once, each node's transport is chosen.
func (c *connector) Connect(ctx context.Context) (driver.Locker, error) {
	cfg := c.cfg
	if cfg.err != nil {
		return nil, cfg.err
	}
	if c.external != nil {
		return c.connectExternal(&cfg)
	}
	var nodes []*node
	if c.pools != nil {
		for i, p := range c.pools {
			var dial func(context.Context) (redis.Conn, error)
			switch {
			case p.DialContext != nil:
				dial = p.DialContext
			case p.Dial != nil:
				dial = func(context.Context) (redis.Conn, error) { return p.Dial() }
			}
			nodes = append(nodes, &node{name: fmt.Sprintf("pool %d", i), sub: subDial(dial), t: &pooled{pool: p, dial: dial}})
		}
		return newLocker(&cfg, nodes), nil
	}
	opts, err := cfg.dialOptions(false)
	if err != nil {
		return nil, err
	}
	var pipeOpts []redis.DialOption
	if cfg.pipeConns > 0 {
		if pipeOpts, err = cfg.dialOptions(true); err != nil {
			return nil, err
		}
	}
	for _, addr := range cfg.addrs {
		dial := cfg.pooledDial(addr, opts)
		p := &pooled{
			dial: dial,
			own:  true,
			pool: &redis.Pool{
				DialContext:  dial,
				TestOnBorrow: testOnBorrow, // a connection idle for a second or more (idle.go)
				MaxIdle:      cfg.maxIdle,
				MaxActive:    cfg.maxActive,
				Wait:         cfg.maxActive > 0,
				IdleTimeout:  cfg.idleTimeout,
			},
		}
		var t transport = p
		if cfg.pipeConns > 0 {
			t = &pipelined{pipe: pipeline.New(cfg.pipeConns, cfg.pipeDial(addr, pipeOpts)), pooled: p, solo: !cfg.pipeAlways}
		}
		nodes = append(nodes, &node{name: addr, sub: subDial(dial), t: t})
	}
	return newLocker(&cfg, nodes), nil
}
