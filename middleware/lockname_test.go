package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

// jobName names a lock by its key's first path element; keys under
// "anon/" get no name.
func jobName(key string) string {
	job, _, _ := strings.Cut(key, "/")
	if job == "anon" {
		return ""
	}
	return job
}

// heldBy returns the leases-held counter by lock name ("-" for none).
func heldBy(t *testing.T, m metricdata.Metrics) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
		name := "-"
		if v, ok := p.Attributes.Value(middleware.AttrLockName); ok {
			name = v.AsString()
		}
		out[name] += p.Value
	}
	return out
}

// TestLockName: with WithLockName, each named lock is a series of its own,
// keys the function leaves unnamed share the series without a name, and the
// key never shows; without it, no series has a name. Spans and log records
// carry the name too.
func TestLockName(t *testing.T) {
	ctx := context.Background()
	keys := []string{"reports/" + secretKey, "billing/" + secretKey, "anon/" + secretKey}
	run := func(opts ...middleware.Option) (map[string]metricdata.Metrics, *records, string) {
		reader := newReader()
		logs := &records{}
		rec, tp := tracer()
		table := mem.NewTable()
		other := mutex.NewClient(mem.FromTable(table))
		defer other.Close()
		if _, err := other.NewMutex("reports/elsewhere").TryLock(ctx); err != nil {
			t.Fatal(err)
		}
		c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(
			middleware.Metrics(append(opts, middleware.WithMeterProvider(reader.provider()))...),
			middleware.Logging(logs.logger(), opts...),
			middleware.Tracing(append(opts, tp)...),
		))
		defer c.Close()
		for _, k := range keys {
			if _, err := c.NewMutex(k).TryLock(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.NewMutex("reports/elsewhere").TryLock(ctx); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("TryLock of a key held elsewhere: %v", err)
		}
		m := collect(t, reader.r)
		for name, sets := range points(t, m) {
			for _, s := range sets {
				if strings.Contains(s.Encoded(attribute.DefaultEncoder()), secretKey) {
					t.Errorf("%s carries the key: %s", name, s.Encoded(attribute.DefaultEncoder()))
				}
			}
		}
		var spanNames []string
		for _, s := range spansNamed(rec, middleware.SpanTryLock) {
			if n := attrs(s.Attributes())[middleware.AttrLockName]; n != "" {
				spanNames = append(spanNames, n)
			}
		}
		return m, logs, strings.Join(spanNames, " ")
	}

	m, logs, spanNames := run(middleware.WithLockName(jobName))
	if got, want := heldBy(t, m[middleware.MetricHeld]), map[string]int64{"reports": 1, "billing": 1, "-": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s by lock name: %v; want %v", middleware.MetricHeld, got, want)
	}
	if got := heldBy(t, m[middleware.MetricContended]); got["reports"] != 1 || len(got) != 1 {
		t.Errorf("%s by lock name: %v; want reports: 1", middleware.MetricContended, got)
	}
	var named []string
	for _, r := range logs.all(t) {
		if n, ok := r[middleware.AttrLockName]; ok && r[middleware.AttrOperation] == middleware.OperationTryLock {
			named = append(named, fmt.Sprint(n))
		}
	}
	if got := strings.Join(named, " "); got != "reports billing reports" {
		t.Errorf("trylock records named %q; want reports billing reports", got)
	}

	if spanNames != "reports billing reports" {
		t.Errorf("trylock spans named %q; want reports billing reports", spanNames)
	}

	m, _, spanNames = run()
	if spanNames != "" {
		t.Errorf("trylock spans named %q without WithLockName", spanNames)
	}
	for name, sets := range points(t, m) {
		for _, s := range sets {
			if _, ok := s.Value(middleware.AttrLockName); ok {
				t.Errorf("%s has a lock name without WithLockName: %s", name, s.Encoded(attribute.DefaultEncoder()))
			}
		}
	}
}
