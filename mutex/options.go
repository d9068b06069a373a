package mutex

import (
	"errors"
	"fmt"
	"time"
)

// Limits on keys and leases.
const (
	// MaxKeyLen is the longest key accepted, in bytes. Keys are otherwise
	// free-form: any bytes, unicode, spaces; drivers encode them safely.
	MaxKeyLen = 4096

	// DefaultTTL is the lease length on TTL backends when WithTTL is not
	// given. A held lease is renewed about every third of it; a crashed
	// holder blocks others for at most this long.
	DefaultTTL = 15 * time.Second

	// MinTTL and MaxTTL bound WithTTL.
	MinTTL = 100 * time.Millisecond
	MaxTTL = time.Hour

	// MaxMinHold bounds WithMinHold.
	MaxMinHold = 24 * time.Hour

	// DefaultHeartbeat is how often a client verifies its session leases
	// (PostgreSQL, file: grants that do not expire) when WithHeartbeat is
	// not given. MinHeartbeat and MaxHeartbeat bound WithHeartbeat.
	DefaultHeartbeat = time.Second
	MinHeartbeat     = 10 * time.Millisecond
	MaxHeartbeat     = time.Minute
)

// Option configures a Client.
type Option func(*clientConfig)

type clientConfig struct {
	middleware []Middleware
	heartbeat  time.Duration
	err        error // reported by every operation of the client
}

// WithHeartbeat sets how often the client verifies its session leases
// (grants that last until their session ends: PostgreSQL, file), in one
// driver call per heartbeat for all of them: from MinHeartbeat to
// MaxHeartbeat, DefaultHeartbeat when not given. A session lease whose
// session died is reported lost at the next heartbeat; one that cannot be
// verified (the server does not answer) after two and a half heartbeats.
// Leases that expire (Redis, mem) are renewed on their TTL's schedule
// instead.
func WithHeartbeat(d time.Duration) Option {
	return func(c *clientConfig) {
		if d < MinHeartbeat || d > MaxHeartbeat {
			c.err = errors.Join(c.err, fmt.Errorf("heartbeat %v outside [%v, %v]: %w", d, MinHeartbeat, MaxHeartbeat, ErrInvalid))
			return
		}
		c.heartbeat = d
	}
}

// WithMiddleware adds middleware around the client's driver calls and as
// observers of its operations. The first listed is outermost.
func WithMiddleware(m ...Middleware) Option {
	return func(c *clientConfig) { c.middleware = append(c.middleware, m...) }
}

// MutexOption configures a Mutex.
type MutexOption func(*mutexConfig)

type mutexConfig struct {
	ttl     time.Duration
	fencing bool
	minHold time.Duration
	err     error
}

// WithTTL sets the lease length on backends whose locks expire (Redis,
// mem): from MinTTL to MaxTTL, DefaultTTL when not given. A held lease is
// renewed automatically, so the TTL bounds only how long a crashed holder
// keeps others out. Session backends (PostgreSQL, file) ignore it.
func WithTTL(d time.Duration) MutexOption {
	return func(c *mutexConfig) {
		if d < MinTTL || d > MaxTTL {
			c.err = errors.Join(c.err, fmt.Errorf("TTL %v outside [%v, %v]", d, MinTTL, MaxTTL))
			return
		}
		c.ttl = d
	}
}

// WithFencing requires fencing tokens: Lock and TryLock fail with an error
// matching errors.ErrUnsupported when the driver cannot issue them, rather
// than return leases whose Token is 0.
func WithFencing() MutexOption {
	return func(c *mutexConfig) { c.fencing = true }
}

// WithMinHold keeps the lock at least d from acquisition, even when Unlock
// comes sooner (ShedLock's lockAtLeastFor): pods whose cron fires a little
// later then find it held and skip, rather than run the job again. Unlock
// returns at once; the client keeps the lock, renewing it as needed, and
// releases it when d has passed, or when the client is closed.
func WithMinHold(d time.Duration) MutexOption {
	return func(c *mutexConfig) {
		if d < 0 || d > MaxMinHold {
			c.err = errors.Join(c.err, fmt.Errorf("min hold %v outside [0, %v]", d, MaxMinHold))
			return
		}
		c.minHold = d
	}
}

func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case len(key) > MaxKeyLen:
		return fmt.Errorf("key of %d bytes is longer than %d", len(key), MaxKeyLen)
	}
	return nil
}
