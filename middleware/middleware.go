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
)

// Option configures Tracing, Metrics and Logging.
type Option func(*config)

type config struct {
	tracerProvider trace.TracerProvider // nil: the global one
	meterProvider  metric.MeterProvider // nil: the global one
	rawKeys        bool
	level          slog.Level
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

// keyAttr describes a key without recording it, unless rawKeys.
func keyAttr(key string, rawKeys bool) attribute.KeyValue {
	if rawKeys {
		return attribute.String(AttrKey, key)
	}
	sum := sha256.Sum256([]byte(key))
	return attribute.String(AttrKeyHash, hex.EncodeToString(sum[:8]))
}

// Chain composes middleware into one: the first listed is outermost, both
// around driver calls and among observers. mutex.WithMiddleware(a, b) and
// mutex.WithMiddleware(Chain(a, b)) are the same.
func Chain(m ...driver.Middleware) driver.Middleware {
	var wraps []func(driver.Locker, driver.Info) driver.Locker
	var observers []*driver.Observer
	for _, mw := range m {
		if mw.Wrap != nil {
			wraps = append(wraps, mw.Wrap)
		}
		if mw.Observer != nil {
			observers = append(observers, mw.Observer)
		}
	}
	var out driver.Middleware
	if len(wraps) > 0 {
		out.Wrap = func(next driver.Locker, info driver.Info) driver.Locker {
			for i := len(wraps) - 1; i >= 0; i-- {
				next = wraps[i](next, info)
			}
			return next
		}
	}
	if len(observers) > 0 {
		out.Observer = chainObservers(observers)
	}
	return out
}

func chainObservers(obs []*driver.Observer) *driver.Observer {
	return &driver.Observer{
		LockStart: func(ctx context.Context, ev driver.LockStart) context.Context {
			for _, o := range obs {
				if o.LockStart != nil {
					ctx = o.LockStart(ctx, ev)
				}
			}
			return ctx
		},
		LockDone: func(ctx context.Context, ev driver.LockDone) {
			for i := len(obs) - 1; i >= 0; i-- {
				if o := obs[i]; o.LockDone != nil {
					o.LockDone(ctx, ev)
				}
			}
		},
		LeaseEnd: func(ev driver.LeaseEnd) {
			for _, o := range obs {
				if o.LeaseEnd != nil {
					o.LeaseEnd(ev)
				}
			}
		},
		Renewed: func(ev driver.Renewed) {
			for _, o := range obs {
				if o.Renewed != nil {
					o.Renewed(ev)
				}
			}
		},
	}
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
	case errors.Is(err, driver.ErrLocked):
		return OutcomeLocked
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return OutcomeCanceled // gave up waiting: contention, not a failure
	}
	return OutcomeError
}

// isFailure reports whether an outcome is a failure: an error status on a
// span, the failed counter, a Warn record.
func isFailure(outcome string) bool { return outcome == OutcomeError }
