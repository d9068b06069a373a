package middleware_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

// The tests here check that a lease's telemetry stays in the trace of the
// Lock that acquired it: renewals, their failures, the loss, Do's release.

func tracer() (*tracetest.SpanRecorder, middleware.Option) {
	rec := tracetest.NewSpanRecorder()
	return rec, middleware.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
}

// spansNamed returns the ended spans called name.
func spansNamed(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// oneSpan returns the only ended span called name.
func oneSpan(t *testing.T, rec *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	s := spansNamed(rec, name)
	if len(s) != 1 {
		t.Fatalf("%d %s spans; want 1", len(s), name)
	}
	return s[0]
}

// childOf fails unless span is a child of parent, in its trace.
func childOf(t *testing.T, span, parent sdktrace.ReadOnlySpan) {
	t.Helper()
	if span.SpanContext().TraceID() != parent.SpanContext().TraceID() || span.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("%s span: trace %s, parent %s; want a child of the %s span (trace %s, span %s)", span.Name(),
			span.SpanContext().TraceID(), span.Parent().SpanID(), parent.Name(), parent.SpanContext().TraceID(), parent.SpanContext().SpanID())
	}
}

// TestRenewalsMakeNoTraces: a lease held by Do for many renewals makes no
// trace of its own: every span is in the Lock's trace, whose only root is
// the Lock's span, and renewals that succeed make no span.
func TestRenewalsMakeNoTraces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		rec, tp := tracer()
		var renewals atomic.Int32
		c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(
			middleware.Tracing(tp), countRenewals(&renewals)))
		defer c.Close()
		err := c.NewMutex("k", mutex.WithTTL(time.Second)).Do(ctx, func(context.Context) error {
			time.Sleep(10 * time.Second)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := renewals.Load(); n < 20 {
			t.Fatalf("%d renewals in 10 s at TTL 1 s; want about 30", n)
		}
		lock := oneSpan(t, rec, middleware.SpanLock)
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID() != lock.SpanContext().TraceID() {
				t.Errorf("%s span in trace %s; want the Lock's %s", s.Name(), s.SpanContext().TraceID(), lock.SpanContext().TraceID())
			}
			if !s.Parent().IsValid() && s.Name() != middleware.SpanLock {
				t.Errorf("%s span is a root", s.Name())
			}
		}
		if n := len(rec.Ended()); n > 3 {
			t.Errorf("%d spans for one Do and %d renewals; want 3 (lock, acquire, release)", n, renewals.Load())
		}
	})
}

// TestRenewalFailureInLockTrace: a renewal that fails and the loss of the
// lease are children of the Lock's span, and errors.
func TestRenewalFailureInLockTrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		rec, tp := tracer()
		table := mem.NewTable()
		var fails, renewFails atomic.Int32
		renewFails.Store(1)
		c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(
			middleware.Tracing(tp), flaky(&fails, &renewFails)))
		defer c.Close()
		l, err := c.NewMutex("k", mutex.WithTTL(time.Second)).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second) // the first renewal fails, the next ones succeed
		if err := l.Err(); err != nil {
			t.Fatalf("lease ended after one failed renewal: %v", err)
		}
		table.Drop("k")
		<-l.Done()
		synctest.Wait()

		lock := oneSpan(t, rec, middleware.SpanLock)
		renew := oneSpan(t, rec, middleware.SpanRenew)
		childOf(t, renew, lock)
		if renew.Status().Code != codes.Error || attrs(renew.Attributes())[middleware.AttrOutcome] != middleware.OutcomeError {
			t.Errorf("failed renewal: status %v, %v; want an error", renew.Status(), attrs(renew.Attributes()))
		}
		if attrs(renew.Attributes())[middleware.AttrKeyHash] == "" {
			t.Error("failed renewal span without the key's hash")
		}
		lost := oneSpan(t, rec, middleware.SpanLost)
		childOf(t, lost, lock)
		if lost.Status().Code != codes.Error {
			t.Errorf("loss: status %v; want an error", lost.Status())
		}
	})
}

// TestDoInOneTrace: without a span in the caller's context, Do's lock and
// release spans are in one trace (the release a child of the Lock's span),
// and so are TryDo's with WithMinHold, whose release comes later from the
// client. With a caller's span, all are in the caller's trace.
func TestDoInOneTrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		rec, tp := tracer()
		c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(middleware.Tracing(tp)))
		defer c.Close()
		fn := func(context.Context) error { return nil }

		if err := c.NewMutex("do").Do(ctx, fn); err != nil {
			t.Fatal(err)
		}
		childOf(t, oneSpan(t, rec, middleware.SpanRelease), oneSpan(t, rec, middleware.SpanLock))
		childOf(t, oneSpan(t, rec, middleware.SpanAcquire), oneSpan(t, rec, middleware.SpanLock))

		rec.Reset()
		if err := c.NewMutex("trydo", mutex.WithMinHold(time.Minute)).TryDo(ctx, fn); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Minute)
		childOf(t, oneSpan(t, rec, middleware.SpanRelease), oneSpan(t, rec, middleware.SpanTryLock))

		rec.Reset()
		callerTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		cctx, caller := callerTP.Tracer("caller").Start(ctx, "job")
		if err := c.NewMutex("caller").Do(cctx, fn); err != nil {
			t.Fatal(err)
		}
		caller.End()
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID() != caller.SpanContext().TraceID() {
				t.Errorf("%s span outside the caller's trace", s.Name())
			}
		}
		childOf(t, oneSpan(t, rec, middleware.SpanLock), oneSpan(t, rec, "job"))
	})
}

// TestCloseIsNotLoss: a lease ended by Client.Close is closed in every
// telemetry: a span that is not an error, in the Lock's trace; not counted
// as lost, its hold recorded as closed; an Info record, not a Warn.
func TestCloseIsNotLoss(t *testing.T) {
	ctx := context.Background()
	rec, tp := tracer()
	reader := newReader()
	logs := &records{}
	c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(
		middleware.Logging(logs.logger(), middleware.WithLevel(slog.LevelInfo)),
		middleware.Tracing(tp),
		middleware.Metrics(middleware.WithMeterProvider(reader.provider())),
	))
	l, err := c.NewMutex(secretKey).TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Err(); !errors.Is(err, mutex.ErrClosed) {
		t.Fatalf("lease Err = %v; want ErrClosed", err)
	}

	if s := spansNamed(rec, middleware.SpanLost); len(s) != 0 {
		t.Errorf("a loss span for a lease ended by Close")
	}
	closed := oneSpan(t, rec, middleware.SpanClosed)
	childOf(t, closed, oneSpan(t, rec, middleware.SpanTryLock))
	if closed.Status().Code == codes.Error || attrs(closed.Attributes())[middleware.AttrOutcome] != middleware.OutcomeClosed {
		t.Errorf("closed span: status %v, %v; want outcome closed, not an error", closed.Status(), attrs(closed.Attributes()))
	}

	m := collect(t, reader.r)
	if lost, ok := m[middleware.MetricLost]; ok && sum(t, lost) != 0 {
		t.Errorf("%s = %d; want 0", middleware.MetricLost, sum(t, lost))
	}
	if got := sum(t, m[middleware.MetricHeld]); got != 0 {
		t.Errorf("%s = %d; want 0", middleware.MetricHeld, got)
	}
	if outs := histOutcomes(t, m[middleware.MetricHoldDuration]); len(outs) != 1 || outs[middleware.OutcomeClosed] != 1 {
		t.Errorf("%s by outcome: %v; want closed: 1", middleware.MetricHoldDuration, outs)
	}

	got, want := logs.lines(t, "INFO", "WARN"), []string{
		"INFO acquire acquired", "INFO trylock acquired", "INFO lease closed", "INFO release released",
	}
	if !slices.Equal(got, want) {
		t.Errorf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
