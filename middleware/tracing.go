package middleware

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/mutexkit/mutexkit/driver"
)

// Tracing records OpenTelemetry spans: one per Lock or TryLock (its whole
// wait), with a child per driver operation it makes (acquire attempts), one
// per release, renewal batch, inspection and ping, and one when a lease is
// lost. Each carries the driver name and the outcome; contention is an
// outcome (locked), not an error status.
//
// With a no-op TracerProvider (go.opentelemetry.io/otel/trace/noop) it adds
// nothing at all.
func Tracing(opts ...Option) driver.Middleware {
	cfg := newConfig(opts)
	tp := cfg.tracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if _, noop := tp.(tracenoop.TracerProvider); noop {
		return driver.Middleware{}
	}
	t := &tracing{
		tracer:     tp.Tracer(ScopeName),
		rawKeys:    cfg.rawKeys,
		clientSpan: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)},
		localSpan:  []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)},
	}
	return driver.Middleware{
		Wrap: func(next driver.Locker, info driver.Info) driver.Locker {
			return &tracingLocker{Locker: next, t: t, driver: attribute.String(AttrDriver, info.Driver)}
		},
		Observer: &driver.Observer{LockStart: t.lockStart, LockDone: t.lockDone, LeaseEnd: t.leaseEnd},
	}
}

type tracing struct {
	tracer                trace.Tracer
	rawKeys               bool
	clientSpan, localSpan []trace.SpanStartOption // made once: a variadic slice per call would allocate
}

// lockSpanKey finds a tracing value's Lock span in the context; the span
// the context holds may be another tracing middleware's.
type lockSpanKey struct{ t *tracing }

func (t *tracing) lockStart(ctx context.Context, ev driver.LockStart) context.Context {
	name := SpanTryLock
	if ev.Wait {
		name = SpanLock
	}
	ctx, span := t.tracer.Start(ctx, name, t.localSpan...)
	if !span.IsRecording() {
		return ctx // nothing to end: a non-recording span's End does nothing
	}
	span.SetAttributes(attribute.String(AttrDriver, ev.Driver), keyAttr(ev.Key, t.rawKeys))
	return context.WithValue(ctx, lockSpanKey{t}, span)
}

func (t *tracing) lockDone(ctx context.Context, d driver.LockDone) {
	span, ok := ctx.Value(lockSpanKey{t}).(trace.Span)
	if !ok {
		return
	}
	out := lockOutcome(d.Err)
	span.SetAttributes(
		attribute.String(AttrOutcome, out),
		attribute.Float64(AttrWait, d.Waited.Seconds()),
		attribute.Int(AttrAttempts, d.Attempts),
	)
	if d.Token != 0 {
		span.SetAttributes(attribute.Int64(AttrToken, int64(d.Token)))
	}
	endSpan(span, out, d.Err)
}

func (t *tracing) leaseEnd(ev driver.LeaseEnd) {
	if ev.Err == nil {
		return
	}
	_, span := t.tracer.Start(context.Background(), SpanLost, t.localSpan...)
	if span.IsRecording() {
		span.SetAttributes(attribute.String(AttrDriver, ev.Driver), keyAttr(ev.Key, t.rawKeys),
			attribute.String(AttrOutcome, OutcomeLost))
		span.RecordError(ev.Err)
		span.SetStatus(codes.Error, "lease lost")
	}
	span.End()
}

// endSpan sets the outcome's status and ends span. Only failures are errors.
func endSpan(span trace.Span, out string, err error) {
	if isFailure(out) {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

type tracingLocker struct {
	driver.Locker
	t      *tracing
	driver attribute.KeyValue
}

// start begins a client span for one driver operation on key ("" for none).
func (l *tracingLocker) start(ctx context.Context, name, key string) (context.Context, trace.Span) {
	ctx, span := l.t.tracer.Start(ctx, name, l.t.clientSpan...)
	if span.IsRecording() { // hash the key only when someone records it
		span.SetAttributes(l.driver)
		if key != "" {
			span.SetAttributes(keyAttr(key, l.t.rawKeys))
		}
	}
	return ctx, span
}

func (l *tracingLocker) end(span trace.Span, success string, err error) {
	out := outcome(success, err)
	if span.IsRecording() {
		span.SetAttributes(attribute.String(AttrOutcome, out))
	}
	endSpan(span, out, err)
}

func (l *tracingLocker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	ctx, span := l.start(ctx, SpanAcquire, req.Key)
	g, err := l.Locker.Acquire(ctx, req)
	if err == nil && g.Token != 0 && span.IsRecording() {
		span.SetAttributes(attribute.Int64(AttrToken, int64(g.Token)))
	}
	l.end(span, OutcomeAcquired, err)
	return g, err
}

func (l *tracingLocker) Release(ctx context.Context, key string, owner driver.Owner) error {
	ctx, span := l.start(ctx, SpanRelease, key)
	err := l.Locker.Release(ctx, key, owner)
	l.end(span, OutcomeReleased, err)
	return err
}

// Renew records one span for the batch, with how many leases it carried
// and how many came back lost or failed.
func (l *tracingLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	ctx, span := l.start(ctx, SpanRenew, "")
	l.Locker.Renew(ctx, batch)
	var lost, failed int
	var firstErr error
	for _, r := range batch {
		switch outcome(OutcomeRenewed, r.Err) {
		case OutcomeLost:
			lost++
		case OutcomeError:
			failed++
			if firstErr == nil {
				firstErr = r.Err
			}
		}
	}
	out := OutcomeRenewed
	switch {
	case failed > 0:
		out = OutcomeError
	case lost > 0:
		out = OutcomeLost
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.Int(AttrBatch, len(batch)), attribute.String(AttrOutcome, out),
			attribute.Int("mutexkit.batch.lost", lost), attribute.Int("mutexkit.batch.failed", failed))
	}
	endSpan(span, out, firstErr)
}

func (l *tracingLocker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	ctx, span := l.start(ctx, SpanInspect, key)
	h, held, err := l.Locker.Inspect(ctx, key)
	l.end(span, OutcomeOK, err)
	return h, held, err
}

func (l *tracingLocker) Ping(ctx context.Context) error {
	ctx, span := l.start(ctx, SpanPing, "")
	err := l.Locker.Ping(ctx)
	l.end(span, OutcomeOK, err)
	return err
}
