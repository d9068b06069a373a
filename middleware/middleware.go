package middleware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Option configures Tracing, Metrics and Logging.
type Option func(*config)

type config struct {
	tracerProvider trace.TracerProvider // nil: the global one
	meterProvider  metric.MeterProvider // nil: the global one
	rawKeys        bool
	level          slog.Level
	lockName       func(key string) string // nil: no AttrLockName
}

func newConfig(opts []Option) config {
	c := config{level: slog.LevelDebug}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// WithTracerProvider makes Tracing's tracer from tp rather than the global
// provider.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracerProvider = tp }
}

// WithMeterProvider makes Metrics' meter from mp rather than the global
// provider.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.meterProvider = mp }
}

// WithRawKeys records keys as they are on spans and log records, rather
// than a hash. Keys may carry customer data: opt in knowingly.
func WithRawKeys() Option {
	return func(c *config) { c.rawKeys = true }
}

// WithLevel sets the level of Logging's record per operation (default
// Debug). Failures and lost leases are logged at Warn or above whatever it
// is.
func WithLevel(l slog.Level) Option {
	return func(c *config) { c.level = l }
}

// WithLockName names each lock by fn(key), recorded as AttrLockName
// (mutexkit.lock.name) on metrics, spans and log records, so that a program
// with several locks can tell which one is contended, held or lost. A key
// for which fn returns "" gets no name.
//
// fn must return a small, bounded set of names, such as the job a key
// belongs to: each name is a series of every instrument, so names made from
// data (a customer, a request) would grow metrics without bound, and would
// put what the key hides into every series. Keys never reach metrics
// otherwise. fn is called for every operation and must be fast and safe for
// concurrent use.
func WithLockName(fn func(key string) string) Option {
	return func(c *config) { c.lockName = fn }
}

// lockName returns fn(key), or "" when there is no fn or no key.
func lockName(fn func(string) string, key string) string {
	if fn == nil || key == "" {
		return ""
	}
	return fn(key)
}

// keyAttr describes a key without recording it, unless rawKeys.
func keyAttr(key string, rawKeys bool) attribute.KeyValue {
	if rawKeys {
		return attribute.String(AttrKey, key)
	}
	sum := sha256.Sum256([]byte(key))
	return attribute.String(AttrKeyHash, hex.EncodeToString(sum[:8]))
}

// outcome names how an operation ended, for spans, metrics and logs.
// Contention and a lease found gone are outcomes, not failures.
func outcome(success string, err error) string {
	switch {
	case err == nil:
		return success
	case errors.Is(err, driver.ErrLocked):
		return OutcomeLocked
	case errors.Is(err, driver.ErrNotHeld):
		return OutcomeLost
	}
	return OutcomeError
}

// lockOutcome is outcome for a whole Lock or TryLock, whose errors come
// from package mutex (which maps driver errors, so errors.Is still sees
// them) or from a context.
func lockOutcome(err error) string {
	switch {
	case err == nil:
		return OutcomeAcquired
	case errors.Is(err, mutex.ErrUnavailable):
		return OutcomeError // an outage, even when a Lock's ctx ended during it
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return OutcomeCanceled // gave up waiting (held meanwhile): contention, not a failure
	case errors.Is(err, mutex.ErrLocked):
		return OutcomeLocked
	}
	return OutcomeError
}

// leaseOutcome names how a lease ended: unlocked (released), ended by
// Client.Close (closed: a shutdown, neither counted nor logged as a loss),
// or lost. An end that matches ErrLockLost is lost whatever else it
// matches, so that no loss ever passes for a shutdown.
func leaseOutcome(err error) string {
	switch {
	case err == nil:
		return OutcomeReleased
	case errors.Is(err, mutex.ErrLockLost):
		return OutcomeLost
	case errors.Is(err, driver.ErrClosed):
		return OutcomeClosed
	}
	return OutcomeLost
}

// isFailure reports whether an outcome is a failure: an error status on a
// span, the failed counter, a Warn record.
func isFailure(outcome string) bool { return outcome == OutcomeError }
