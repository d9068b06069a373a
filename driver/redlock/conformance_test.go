package redlock_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

// TestConformance runs the suite on one node (fencing tokens) and on five
// (Redlock). The servers are shared by the cases; each case has a key
// prefix of its own.
func TestConformance(t *testing.T) {
	for _, n := range []int{1, 5} {
		t.Run(map[int]string{1: "1node", 5: "5nodes"}[n], func(t *testing.T) {
			servers := testserver.StartRedis(t, n)
			conformance.Run(t, func(_ context.Context, t *testing.T) (conformance.Harness, error) {
				return &harness{cluster: newCluster(t, servers)}, nil
			})
		})
	}
}

// TestConformanceSortedSetQueue runs the suite on one node by the sorted
// set queue (queue.go), which one node runs with replica
// acknowledgements or on a Redis Cluster.
func TestConformanceSortedSetQueue(t *testing.T) {
	servers := testserver.StartRedis(t, 1)
	conformance.Run(t, func(_ context.Context, t *testing.T) (conformance.Harness, error) {
		c := newCluster(t, servers)
		c.opts = []redlock.Option{redlock.WithoutListQueue()}
		return &harness{cluster: c}, nil
	})
}

// TestConformanceWithMiddleware: the whole middleware stack, recording to
// SDK providers, keeps the driver conformant against a real node.
func TestConformanceWithMiddleware(t *testing.T) {
	servers := testserver.StartRedis(t, 1)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	stack := mutex.WithMiddleware(
		middleware.Logging(slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		middleware.Tracing(middleware.WithTracerProvider(tp)),
		middleware.Metrics(middleware.WithMeterProvider(mp)),
		middleware.Retry(),
	)
	conformance.Run(t, func(_ context.Context, t *testing.T) (conformance.Harness, error) {
		return &harness{cluster: newCluster(t, servers)}, nil
	}, stack)
}

func (h *harness) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{
		Fencing:    len(h.servers) == 1,
		TTL:        true,
		LossWithin: 5 * time.Second,  // a renewal every third of the suite's 2s TTL finds it
		FreeWithin: 15 * time.Second, // Abandon's TTL is 1s
		Queue:      true,
	}
}

// RestartEmpty restarts every server without its data (conformance.Restarter).
func (h *harness) RestartEmpty(context.Context) error {
	for _, s := range h.servers {
		s.Restart()
	}
	return nil
}
