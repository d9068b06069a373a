package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

const secretKey = "customer-4711@example.com"

// TestConformance: each middleware alone, and all stacked, keep a driver
// conformant, as a third party's middleware would prove it.
func TestConformance(t *testing.T) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	logger := slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	all := []mutex.Middleware{
		middleware.Logging(logger),
		middleware.Tracing(middleware.WithTracerProvider(tp)),
		middleware.Metrics(middleware.WithMeterProvider(mp)),
		middleware.Retry(),
	}
	for i, name := range []string{"Logging", "Tracing", "Metrics", "Retry"} {
		t.Run(name, func(t *testing.T) {
			conformance.Run(t, conformance.MemHarness, mutex.WithMiddleware(all[i]))
		})
	}
	t.Run("Stacked", func(t *testing.T) {
		conformance.Run(t, conformance.MemHarness, mutex.WithMiddleware(all...))
	})
}

func attrs(kvs []attribute.KeyValue) map[string]string {
	m := make(map[string]string)
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

func TestTracing(t *testing.T) {
	ctx := context.Background()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	table := mem.NewTable()
	c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(middleware.Tracing(middleware.WithTracerProvider(tp))))
	defer c.Close()
	other := mutex.NewClient(mem.FromTable(table))
	defer other.Close()

	l, err := c.NewMutex(secretKey).TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held, _ := other.NewMutex("contended").TryLock(ctx)
	if _, err := c.NewMutex("contended").TryLock(ctx); !errors.Is(err, mutex.ErrLocked) {
		t.Fatal(err)
	}
	held.Unlock(ctx)
	l.Unlock(ctx)
	l2, _ := c.NewMutex("dropped").TryLock(ctx)
	table.Drop("dropped")
	<-l2.Done()

	spans := rec.Ended()
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = append(byName[s.Name()], s)
		if s.InstrumentationScope().Name != middleware.ScopeName {
			t.Errorf("span %s from scope %q; want %q", s.Name(), s.InstrumentationScope().Name, middleware.ScopeName)
		}
		a := attrs(s.Attributes())
		if _, raw := a[middleware.AttrKey]; raw || strings.Contains(fmt.Sprint(s.Attributes()), secretKey) {
			t.Errorf("span %s records the raw key without WithRawKeys: %v", s.Name(), a)
		}
		if a[middleware.AttrDriver] != "mem" {
			t.Errorf("span %s: driver attribute %q; want mem", s.Name(), a[middleware.AttrDriver])
		}
	}
	if len(byName[middleware.SpanTryLock]) != 3 || len(byName[middleware.SpanAcquire]) != 3 || len(byName[middleware.SpanRelease]) != 1 || len(byName[middleware.SpanLost]) != 1 {
		t.Fatalf("spans: %d trylock, %d acquire, %d release, %d lost; want 3, 3, 1, 1",
			len(byName[middleware.SpanTryLock]), len(byName[middleware.SpanAcquire]), len(byName[middleware.SpanRelease]), len(byName[middleware.SpanLost]))
	}
	first, acquire := byName[middleware.SpanTryLock][0], byName[middleware.SpanAcquire][0]
	if acquire.Parent().SpanID() != first.SpanContext().SpanID() {
		t.Error("the acquire attempt's span is not a child of its TryLock's span")
	}
	if a := attrs(first.Attributes()); a[middleware.AttrOutcome] != middleware.OutcomeAcquired || a[middleware.AttrKeyHash] == "" || a[middleware.AttrToken] != "1" {
		t.Errorf("first TryLock span attributes %v", a)
	}
	contended := byName[middleware.SpanTryLock][1]
	if a := attrs(contended.Attributes()); a[middleware.AttrOutcome] != middleware.OutcomeLocked || contended.Status().Code == codes.Error {
		t.Errorf("contended TryLock: outcome %q, status %v; want locked, not an error", a[middleware.AttrOutcome], contended.Status())
	}
	if lost := byName[middleware.SpanLost][0]; lost.Status().Code != codes.Error || attrs(lost.Attributes())[middleware.AttrOutcome] != middleware.OutcomeLost {
		t.Errorf("loss span: status %v, %v", lost.Status(), attrs(lost.Attributes()))
	}

	// With WithRawKeys, the key is recorded.
	rec2 := tracetest.NewSpanRecorder()
	tp2 := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec2))
	c2 := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(
		middleware.Tracing(middleware.WithTracerProvider(tp2), middleware.WithRawKeys())))
	defer c2.Close()
	l3, _ := c2.NewMutex(secretKey).TryLock(ctx)
	l3.Unlock(ctx)
	if a := attrs(rec2.Ended()[0].Attributes()); a[middleware.AttrKey] != secretKey {
		t.Errorf("with WithRawKeys: %v; want the key", a)
	}
}

func TestTracingMarksFailures(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	var fails atomic.Int32
	fails.Store(1)
	c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(
		middleware.Tracing(middleware.WithTracerProvider(tp)), flaky(&fails, nil)))
	defer c.Close()
	if _, err := c.NewMutex("k").TryLock(context.Background()); !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("TryLock = %v; want the injected failure", err)
	}
	for _, s := range rec.Ended() {
		if s.Name() == middleware.SpanAcquire && s.Status().Code != codes.Error {
			t.Errorf("failed acquire: status %v; want Error", s.Status())
		}
	}
}

// collect reads every metric the reader has, by name.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != middleware.ScopeName {
			t.Errorf("metrics from scope %q", sm.Scope.Name)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func sum(t *testing.T, m metricdata.Metrics) int64 {
	t.Helper()
	var n int64
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			n += p.Value
			checkLowCardinality(t, m.Name, p.Attributes)
		}
	default:
		t.Fatalf("%s: %T, want a sum", m.Name, m.Data)
	}
	return n
}

func histCount(t *testing.T, m metricdata.Metrics) uint64 {
	t.Helper()
	d, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s: %T, want a histogram", m.Name, m.Data)
	}
	if m.Unit != "s" {
		t.Errorf("%s: unit %q, want s", m.Name, m.Unit)
	}
	var n uint64
	for _, p := range d.DataPoints {
		n += p.Count
		checkLowCardinality(t, m.Name, p.Attributes)
	}
	return n
}

func checkLowCardinality(t *testing.T, name string, set attribute.Set) {
	for _, kv := range set.ToSlice() {
		switch kv.Key {
		case middleware.AttrDriver, middleware.AttrOperation, middleware.AttrOutcome:
		default:
			t.Errorf("%s carries attribute %s; want only driver, operation, outcome", name, kv.Key)
		}
	}
}

func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		table := mem.NewTable()
		c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(middleware.Metrics(middleware.WithMeterProvider(mp))))
		defer c.Close()

		a, err := c.NewMutex(secretKey, mutex.WithTTL(time.Second)).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		other := mutex.NewClient(mem.FromTable(table))
		defer other.Close()
		held, _ := other.NewMutex("contended").TryLock(ctx)
		c.NewMutex("contended").TryLock(ctx) // contended
		held.Unlock(ctx)
		b, _ := c.NewMutex("dropped").TryLock(ctx)
		time.Sleep(2 * time.Second) // several renewals of a and b
		m := collect(t, reader)
		if got := sum(t, m[middleware.MetricHeld]); got != 2 {
			t.Errorf("held = %d; want 2", got)
		}
		table.Drop("dropped")
		<-b.Done()
		a.Unlock(ctx)

		m = collect(t, reader)
		for name, want := range map[string]int64{
			middleware.MetricAcquired:  2,
			middleware.MetricContended: 1,
			middleware.MetricLost:      1,
			middleware.MetricHeld:      0,
		} {
			if got := sum(t, m[name]); got != want {
				t.Errorf("%s = %d; want %d", name, got, want)
			}
		}
		if _, ok := m[middleware.MetricFailed]; ok {
			t.Errorf("%s recorded with no failure", middleware.MetricFailed)
		}
		for name, want := range map[string]uint64{
			middleware.MetricAcquireDuration: 3,
			middleware.MetricWaitDuration:    3,
			middleware.MetricHoldDuration:    2,
		} {
			if got := histCount(t, m[name]); got != want {
				t.Errorf("%s count = %d; want %d", name, got, want)
			}
		}
		if got := histCount(t, m[middleware.MetricLeaseRemaining]); got < 4 {
			t.Errorf("%s count = %d; want a point per renewal (several)", middleware.MetricLeaseRemaining, got)
		}
	})
}

func TestLogging(t *testing.T) {
	ctx := context.Background()
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	table := mem.NewTable()
	c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(middleware.Logging(logger, middleware.WithLevel(slog.LevelInfo))))
	defer c.Close()
	l, err := c.NewMutex(secretKey).TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock(ctx)
	l2, _ := c.NewMutex("dropped").TryLock(ctx)
	table.Drop("dropped")
	<-l2.Done()

	if strings.Contains(buf.String(), secretKey) {
		t.Fatalf("log carries the raw key:\n%s", buf.String())
	}
	var records []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		records = append(records, r)
	}
	var ops []string
	for _, r := range records {
		ops = append(ops, fmt.Sprintf("%s %s %s", r["level"], r[middleware.AttrOperation], r[middleware.AttrOutcome]))
		if r[middleware.AttrDriver] != "mem" {
			t.Errorf("record without the driver: %v", r)
		}
	}
	want := []string{
		"INFO acquire acquired", "INFO trylock acquired", "INFO lease released", "INFO release released",
		"INFO acquire acquired", "INFO trylock acquired", "WARN lease lost",
	}
	if strings.Join(ops, "\n") != strings.Join(want, "\n") {
		t.Fatalf("records:\n%s\nwant:\n%s", strings.Join(ops, "\n"), strings.Join(want, "\n"))
	}
}

// flaky fails the next *fails acquire attempts (after making the grant, as
// a lost reply would) and, when renewFails is not nil, that many renewals.
func flaky(fails, renewFails *atomic.Int32) mutex.Middleware {
	return mutex.Middleware{Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
		return &flakyLocker{Locker: next, fails: fails, renewFails: renewFails}
	}}
}

type flakyLocker struct {
	driver.Locker
	fails, renewFails *atomic.Int32
	acquires          atomic.Int32
	owners            []driver.Owner
}

func (l *flakyLocker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	l.acquires.Add(1)
	l.owners = append(l.owners, req.Owner)
	g, err := l.Locker.Acquire(ctx, req)
	if l.fails.Add(-1) >= 0 {
		return driver.Grant{}, fmt.Errorf("injected: %w", driver.ErrUnavailable)
	}
	return g, err
}

func (l *flakyLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	l.Locker.Renew(ctx, batch)
	if l.renewFails != nil && l.renewFails.Add(-1) >= 0 {
		for i := range batch {
			batch[i].Err = fmt.Errorf("injected: %w", driver.ErrUnavailable)
		}
	}
}
