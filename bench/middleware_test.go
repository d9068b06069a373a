package bench

import (
	"context"
	"io"
	"log/slog"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

// BenchmarkMiddleware is BenchmarkUncontended's TryLock+Unlock through
// the full middleware stack (Logging, Tracing, Metrics, Retry), against
// the same without: with no-op providers (what instrumented code costs
// when nobody collects), and with the OpenTelemetry SDK recording every
// span and instrument (spans dropped at the end, metrics read by a manual
// reader). The middleware package's own benchmarks break the cost down
// per middleware (cd middleware && go test -bench .).
func BenchmarkMiddleware(b *testing.B) {
	for _, backend := range []string{memory, redis1} {
		b.Run("backend="+backend, func(b *testing.B) {
			b.Run("stack=none", func(b *testing.B) { middlewareStack(b, backend) })
			b.Run("stack=noop", func(b *testing.B) {
				middlewareStack(b, backend,
					middleware.Logging(slog.New(slog.NewTextHandler(io.Discard, nil))), // Debug records, Info handler
					middleware.Tracing(middleware.WithTracerProvider(tracenoop.NewTracerProvider())),
					middleware.Metrics(middleware.WithMeterProvider(metricnoop.NewMeterProvider())),
					middleware.Retry())
			})
			b.Run("stack=sdk", func(b *testing.B) {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(discardSpans{}))
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				middlewareStack(b, backend,
					middleware.Logging(slog.New(slog.NewTextHandler(io.Discard, nil))),
					middleware.Tracing(middleware.WithTracerProvider(tp)),
					middleware.Metrics(middleware.WithMeterProvider(mp)),
					middleware.Retry())
			})
		})
	}
}

func middlewareStack(b *testing.B, backend string, m ...mutex.Middleware) {
	c := openOurs(b, backend, mutex.WithMiddleware(m...))
	uncontendedOurs(b, c)
}

// discardSpans lets the SDK build and end every span, and drops it.
type discardSpans struct{}

func (discardSpans) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discardSpans) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discardSpans) Shutdown(context.Context) error                  { return nil }
func (discardSpans) ForceFlush(context.Context) error                { return nil }
