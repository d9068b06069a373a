package redlock

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Option configures a Connector beyond its DSN. An Option given a value
// it cannot take makes NewConnector fail, or the Connect of a Connector
// from FromPools, with an error matching driver.ErrInvalid.
type Option func(*config)

func (cfg *config) apply(opts []Option) {
	for _, o := range opts {
		o(cfg)
	}
}

// fail records the first error of the configuration.
func (cfg *config) fail(err error) {
	if cfg.err == nil {
		cfg.err = fmt.Errorf("redlock: %w: %w", driver.ErrInvalid, err)
	}
}

// WithNodeTimeout bounds each node's answer to every call (DSN option
// timeout). By default an acquire or renewal waits a tenth of the TTL (at
// least 10ms) and other calls a second: a node slower than that counts as
// down.
func WithNodeTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail(errors.New("node timeout must be positive"))
			return
		}
		c.nodeTimeout = d
	}
}

// WithDrift sets the clock drift allowed for a grant: factor of the TTL
// plus fixed (DSN options drift_factor and drift_fixed; 0.01 and 2ms by
// default). A grant's validity is its TTL less the drift.
func WithDrift(factor float64, fixed time.Duration) Option {
	return func(c *config) {
		if factor < 0 || factor >= 0.5 || fixed < 0 {
			c.fail(errors.New("drift factor must be in [0, 0.5) and the fixed drift not negative"))
			return
		}
		c.driftFactor, c.driftFixed = factor, fixed
	}
}

// WithPrefix sets the prefix of every Redis key and channel the driver
// uses (DSN option prefix; "mutexkit" by default).
func WithPrefix(prefix string) Option {
	return func(c *config) {
		if err := checkPrefix(prefix); err != nil {
			c.fail(err)
			return
		}
		c.prefix = prefix
	}
}

// checkPrefix refuses an empty prefix, and braces, which would break the
// hash tag (keys.go).
func checkPrefix(prefix string) error {
	switch {
	case prefix == "":
		return errors.New("empty key prefix")
	case strings.ContainsAny(prefix, "{}"):
		return errors.New("key prefix with { or }: it would break the hash tag")
	}
	return nil
}

// WithTLSConfig sets the TLS configuration of a rediss:// DSN. The DSN's
// tls_* options apply on top of it.
func WithTLSConfig(tc *tls.Config) Option {
	return func(c *config) { c.tlsConfig = tc }
}

// WithPipeline sets how many connections each node's calls are pipelined
// over (DSN option pipeline; 1 by default): calls from concurrent
// goroutines are queued and written together, sharing round trips. 0
// turns pipelining off: each call then takes a connection of the pool
// (see WithPool) for its round trip.
func WithPipeline(conns int) Option {
	return func(c *config) {
		if conns < 0 || conns > maxPipelineConns {
			c.fail(fmt.Errorf("pipeline connections must be in [0, %d]", maxPipelineConns))
			return
		}
		c.pipeConns = conns
	}
}

// WithPool sizes the pools the driver makes for each node of a DSN: idle
// connections kept, connections open at most (0: no limit; then callers
// wait for a free one), and how long an idle one is kept (DSN options
// pool_max_idle, pool_max_active, pool_idle_timeout).
func WithPool(maxIdle, maxActive int, idleTimeout time.Duration) Option {
	return func(c *config) {
		if maxIdle < 0 || maxActive < 0 || idleTimeout < 0 {
			c.fail(errors.New("negative pool size or timeout"))
			return
		}
		c.maxIdle, c.maxActive, c.idleTimeout = maxIdle, maxActive, idleTimeout
	}
}

// WithReplicaAcks makes every acquire and every renewal wait, with Redis's
// WAIT, until at least replicas replicas of each node acknowledged its
// write, for at most timeout (DSN options replica_acks and
// replica_acks_timeout, 100ms by default). Use it with a master that has
// replicas and a failover (Sentinel): a grant that a failover would lose
// with the master is then never made. See docs/REDIS.md, "Sentinel and
// replica acknowledgements (WAIT)".
//
// WAIT counts the writes of its own connection, so it is sent right after
// the write, in one round trip on one connection: on a pipelined
// connection (WithPipeline) it would hold every other call behind it, so
// those round trips take a connection of the node's pool instead.
//
// A grant fewer replicas acknowledged in time is given back (best effort)
// and the acquire fails with an error matching ErrNotReplicated and
// driver.ErrUnavailable: Lock waits and tries again, TryLock returns it. A
// renewal fewer replicas acknowledged fails the same way, for every lease
// of the node's batch (one WAIT per batch): the lease is not extended as
// far as a failover is concerned, and is lost if that lasts. Releases and
// queue hand-offs do not wait: one a failover loses leaves the key held
// until its TTL, never two holders. The timeout counts against the
// grant's validity, and WAIT never waits longer than that validity (a
// renewal batch's longest): an acknowledgement after it comes too late to
// count, so a huge timeout cannot hold a call for ever. Replicas 0 turns
// it off.
func WithReplicaAcks(replicas int, timeout time.Duration) Option {
	return func(c *config) {
		if replicas < 0 || (replicas > 0 && timeout < time.Millisecond) {
			c.fail(errors.New("replica acks: want replicas >= 0 and a timeout of 1ms or more (WAIT's 0 would wait for ever)"))
			return
		}
		c.acks = replicaAcks{replicas: replicas, timeout: timeout}
	}
}
