package middleware_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	_ "github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

// Metrics exported to Prometheus through the OpenTelemetry Prometheus
// exporter. A service would serve the registry on /metrics with
// promhttp.HandlerFor(registry, promhttp.HandlerOpts{}); here it is read
// once.
func ExampleMetrics_prometheus() {
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		log.Fatal(err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))

	client, err := mutex.Open("mem", "example-prometheus",
		mutex.WithMiddleware(middleware.Metrics(middleware.WithMeterProvider(provider))))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	for range 3 {
		lease, err := client.NewMutex("nightly-report").TryLock(ctx)
		if err != nil {
			log.Fatal(err)
		}
		lease.Unlock(ctx)
	}

	families, err := registry.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range families {
		switch f.GetName() {
		case "mutexkit_lock_acquired_total", "mutexkit_lease_held":
			m := f.GetMetric()[0]
			fmt.Println(f.GetName(), m.GetCounter().GetValue()+m.GetGauge().GetValue())
		}
	}
	// Output:
	// mutexkit_lease_held 0
	// mutexkit_lock_acquired_total 3
}

// Every middleware on one client; the first listed is outermost.
func Example() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "duration" {
				return slog.Attr{} // keep the example's output stable
			}
			return a
		},
	}))
	client, err := mutex.Open("mem", "example-middleware", mutex.WithMiddleware(
		middleware.Logging(logger, middleware.WithLevel(slog.LevelInfo)),
		middleware.Tracing(), // the global TracerProvider: a no-op until one is set
		middleware.Metrics(), // the global MeterProvider
		middleware.Retry(),
	))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	err = client.NewMutex("nightly-report").Do(context.Background(), func(context.Context) error { return nil })
	fmt.Println("err:", err)
	// Output:
	// level=INFO msg="mutexkit acquire" mutexkit.driver=mem mutexkit.operation=acquire mutexkit.outcome=acquired mutexkit.key.hash=6743ba10a2b2c487
	// level=INFO msg="mutexkit lock" mutexkit.driver=mem mutexkit.operation=lock mutexkit.outcome=acquired mutexkit.key.hash=6743ba10a2b2c487 mutexkit.attempts=1 mutexkit.token=1
	// level=INFO msg="mutexkit lease" mutexkit.driver=mem mutexkit.operation=lease mutexkit.outcome=released mutexkit.key.hash=6743ba10a2b2c487
	// level=INFO msg="mutexkit release" mutexkit.driver=mem mutexkit.operation=release mutexkit.outcome=released mutexkit.key.hash=6743ba10a2b2c487
	// err: <nil>
}
