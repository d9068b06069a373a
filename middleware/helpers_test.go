package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

// reader is a manual metric reader and its provider.
type reader struct{ r *sdkmetric.ManualReader }

func newReader() reader { return reader{sdkmetric.NewManualReader()} }

func (r reader) provider() *sdkmetric.MeterProvider {
	return sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.r))
}

// histOutcomes counts a histogram's points by their outcome attribute.
func histOutcomes(t *testing.T, m metricdata.Metrics) map[string]uint64 {
	t.Helper()
	d, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s: %T, want a histogram", m.Name, m.Data)
	}
	out := map[string]uint64{}
	for _, p := range d.DataPoints {
		v, _ := p.Attributes.Value(middleware.AttrOutcome)
		out[v.AsString()] += p.Count
	}
	return out
}

// records collects JSON log records.
type records struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *records) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *records) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// all returns the records written so far.
func (r *records) all(t *testing.T) []map[string]any {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(r.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		out = append(out, rec)
	}
	return out
}

// lines returns "LEVEL operation outcome" per record at one of levels.
func (r *records) lines(t *testing.T, levels ...string) []string {
	t.Helper()
	var out []string
	for _, rec := range r.all(t) {
		if lv, _ := rec["level"].(string); slices.Contains(levels, lv) {
			out = append(out, fmt.Sprintf("%s %s %s", lv, rec[middleware.AttrOperation], rec[middleware.AttrOutcome]))
		}
	}
	return out
}

// countRenewals counts the leases the driver is asked to renew.
func countRenewals(n *atomic.Int32) mutex.Middleware {
	return mutex.Middleware{Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
		return &renewCounter{Locker: next, n: n}
	}}
}

type renewCounter struct {
	driver.Locker
	n *atomic.Int32
}

func (l *renewCounter) Renew(ctx context.Context, batch []driver.Renewal) {
	l.n.Add(int32(len(batch)))
	l.Locker.Renew(ctx, batch)
}

// points returns every data point's attribute set of every metric.
func points(t *testing.T, m map[string]metricdata.Metrics) map[string][]attribute.Set {
	t.Helper()
	out := map[string][]attribute.Set{}
	for name, md := range m {
		switch d := md.Data.(type) {
		case metricdata.Sum[int64]:
			for _, p := range d.DataPoints {
				out[name] = append(out[name], p.Attributes)
			}
		case metricdata.Histogram[float64]:
			for _, p := range d.DataPoints {
				out[name] = append(out[name], p.Attributes)
			}
		default:
			t.Fatalf("%s: %T", name, md.Data)
		}
	}
	return out
}
