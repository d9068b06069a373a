// Package middleware adds tracing, metrics, retry and logging to a mutexkit
// client, each a driver.Middleware that composes with the others:
//
//	client, err := mutex.Open("postgres", dsn, mutex.WithMiddleware(
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
// Keys can carry customer data: spans and log records carry a short hash of
// the key, and the key itself only with WithRawKeys. Metrics never carry
// keys. Tracer and meter are named by this package's import path and made
// from the providers given with WithTracerProvider and WithMeterProvider,
// the global ones by default.
package middleware
