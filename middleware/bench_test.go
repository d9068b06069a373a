package middleware_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

// Each benchmark is TryLock+Unlock on the mem driver through one
// middleware; BenchmarkNone is the same with none. The differences are each
// middleware's cost.
func benchWith(b *testing.B, m ...mutex.Middleware) {
	ctx := context.Background()
	c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(m...))
	defer c.Close()
	mu := c.NewMutex("k")
	b.ReportAllocs()
	for b.Loop() {
		l, err := mu.TryLock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNone(b *testing.B) { benchWith(b) }

func BenchmarkTracingNoop(b *testing.B) {
	benchWith(b, middleware.Tracing(middleware.WithTracerProvider(tracenoop.NewTracerProvider())))
}

func BenchmarkMetricsNoop(b *testing.B) {
	benchWith(b, middleware.Metrics(middleware.WithMeterProvider(metricnoop.NewMeterProvider())))
}

func BenchmarkRetry(b *testing.B) { benchWith(b, middleware.Retry()) }

func BenchmarkLoggingDisabled(b *testing.B) {
	benchWith(b, middleware.Logging(slog.New(slog.NewTextHandler(io.Discard, nil)))) // Debug records, Info handler
}

func BenchmarkStackNoop(b *testing.B) {
	benchWith(b,
		middleware.Logging(slog.New(slog.NewTextHandler(io.Discard, nil))),
		middleware.Tracing(middleware.WithTracerProvider(tracenoop.NewTracerProvider())),
		middleware.Metrics(middleware.WithMeterProvider(metricnoop.NewMeterProvider())),
		middleware.Retry())
}

func BenchmarkTracingSDK(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(&discardSpans{}))
	benchWith(b, middleware.Tracing(middleware.WithTracerProvider(tp)))
}

func BenchmarkMetricsSDK(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	benchWith(b, middleware.Metrics(middleware.WithMeterProvider(mp)))
}

func BenchmarkLoggingEnabled(b *testing.B) {
	benchWith(b, middleware.Logging(slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))))
}

// discardSpans records spans (they are sampled and built) and drops them.
type discardSpans struct{ tracetest.SpanRecorder }

func (*discardSpans) OnEnd(sdktrace.ReadOnlySpan) {}

// The global providers before the application sets any: they delegate to
// no-ops, but are not known to be no-ops when the middleware is made.
func BenchmarkTracingGlobalUnset(b *testing.B) { benchWith(b, middleware.Tracing()) }

func BenchmarkMetricsGlobalUnset(b *testing.B) { benchWith(b, middleware.Metrics()) }
