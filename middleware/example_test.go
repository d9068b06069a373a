package middleware_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	_ "github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

// Metrics exported to Prometheus through the OpenTelemetry Prometheus
// exporter, with a label per job. A service would serve the registry on
// /metrics with promhttp.HandlerFor(registry, promhttp.HandlerOpts{}); here
// it is read once.
func ExampleMetrics_prometheus() {
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(
		otelprom.WithRegisterer(registry),
		// Without it every series carries otel_scope_name, otel_scope_version
		// and otel_scope_schema_url labels, the same on all of mutexkit's
		// (one instrumentation scope, and the names say mutexkit already).
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		log.Fatal(err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))

	// Keys here are "job/date": label each lock by its job, a bounded set of
	// names. (A name per key would be a series per key, and show the key.)
	jobName := func(key string) string {
		job, _, _ := strings.Cut(key, "/")
		return job
	}
	client, err := mutex.Open("mem://example-prometheus", mutex.WithMiddleware(
		middleware.Metrics(middleware.WithMeterProvider(provider), middleware.WithLockName(jobName))))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	for _, key := range []string{"nightly-report/2026-11-27", "nightly-report/2026-11-28", "billing/2026-11"} {
		if err := client.NewMutex(key).TryDo(ctx, func(context.Context) error { return nil }); err != nil {
			log.Fatal(err)
		}
	}

	families, err := registry.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "mutexkit_lock_acquired_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			fmt.Printf("%s{%s} %v\n", f.GetName(), strings.Join(labels, ","), m.GetCounter().GetValue())
		}
	}
	// Output:
	// mutexkit_lock_acquired_total{mutexkit_driver="mem",mutexkit_lock_name="billing"} 1
	// mutexkit_lock_acquired_total{mutexkit_driver="mem",mutexkit_lock_name="nightly-report"} 2
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
	client, err := mutex.Open("mem://example-middleware", mutex.WithMiddleware(
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
