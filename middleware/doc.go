// Package middleware adds tracing, metrics, retry and logging to a mutexkit
// client, each a mutex.Middleware that composes with the others:
//
//	client, err := mutex.Open(dsn, mutex.WithMiddleware(
//		middleware.Logging(slog.Default()),
//		middleware.Tracing(),            // spans from the global TracerProvider
//		middleware.Metrics(),            // instruments from the global MeterProvider
//		middleware.Retry(),              // transient failures only
//	))
//
// The first listed is outermost. Each middleware both wraps the driver's
// calls (one acquire attempt, a release, a renewal batch) and observes what
// package mutex does between them (the whole wait of a Lock, the hold, a loss
// found by renewal), so one Tracing value sees both levels.
//
// A lease's telemetry belongs to the Lock that acquired it: package mutex
// keeps the Lock's context for the lease's observers, so a failed renewal,
// a loss and the release made by Do or TryDo are children of the Lock's
// span, in its trace, and log records of them carry that context. Renewals
// that succeed make no span (a lease renews every third of its TTL for as
// long as it is held); Metrics records their margin.
//
// A lease ended by Client.Close is closed, not lost: outcome closed, no
// error status, not counted in mutexkit.lease.lost, logged at Info.
//
// Keys can carry customer data: spans and log records carry a short hash of
// the key, and the key itself only with WithRawKeys. Metrics never carry
// keys. To tell locks apart in metrics, WithLockName names each lock by a
// function of its key that returns a bounded set of names (a job, not a
// customer). Tracer and meter are named by this package's import path and
// made from the providers given with WithTracerProvider and
// WithMeterProvider, the global ones by default.
//
// # Cost
//
// With no-op providers Tracing and Metrics recognise them and step aside,
// costing nothing; Retry, and Logging at a disabled level, cost a fraction
// of a microsecond. A middleware that observes (Logging, and Tracing and
// Metrics when they record) costs one small allocation per lease: the
// Lock's context, kept for the lease's observers. Recording costs more,
// Tracing the most (three spans a TryLock+Unlock), yet little next to a
// network round trip. With the global TracerProvider never set, Tracing
// costs more than with a no-op one: set a provider, even a no-op one.
// docs/BENCHMARKS.md has the figures.
package middleware
