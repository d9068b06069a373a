package middleware

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Tracing records OpenTelemetry spans: one per Lock or TryLock (its whole
// wait), with a child per driver operation it makes (acquire attempts), one
// per release, inspection and ping. Each carries the driver name and the
// outcome; contention is an outcome (locked), not an error status.
//
// A lease stays in its Lock's trace: its span's children include the
// release made by Do or TryDo (or after WithMinHold), a renewal that failed
// (mutexkit.renew, an error) and its end when it is lost
// (mutexkit.lease.lost, an error) or ended by Client.Close
// (mutexkit.lease.closed, not an error). Renewals that succeed make no
// span: a lease renews every third of its TTL for as long as it is held,
// which would be thousands of spans a day per lease; Metrics records them
// (mutexkit.lease.remaining). A release by Lease.Unlock is a child of the
// span in Unlock's context.
//
// With a no-op TracerProvider (go.opentelemetry.io/otel/trace/noop) it adds
// nothing at all.
func Tracing(opts ...Option) mutex.Middleware {
	cfg := newConfig(opts)
	tp := cfg.tracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if _, noop := tp.(tracenoop.TracerProvider); noop {
		return mutex.Middleware{}
	}
	t := &tracing{
		tracer:     tp.Tracer(ScopeName),
		rawKeys:    cfg.rawKeys,
		lockName:   cfg.lockName,
		clientSpan: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)},
		localSpan:  []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)},
	}
	return mutex.Middleware{
		Wrap: func(next driver.Locker, info mutex.Info) driver.Locker {
			return &tracingLocker{Locker: next, t: t, driver: attribute.String(AttrDriver, info.Driver)}
		},
		Observer: &mutex.Observer{LockStart: t.lockStart, LockDone: t.lockDone, LeaseEnd: t.leaseEnd, Renewed: t.renewed},
	}
}

type tracing struct {
	tracer                trace.Tracer
	rawKeys               bool
	lockName              func(string) string
	clientSpan, localSpan []trace.SpanStartOption // made once: a variadic slice per call would allocate
}

// lockSpanKey finds a tracing value's Lock span in the context; the span
// the context holds may be another tracing middleware's.
type lockSpanKey struct{ t *tracing }

// setAttrs sets the driver, the key's hash (or the key) and its lock name,
// with more, in one call: each call grows the span's attributes.
func (t *tracing) setAttrs(span trace.Span, drv attribute.KeyValue, key string, more ...attribute.KeyValue) {
	kv := append(make([]attribute.KeyValue, 0, 4), drv, keyAttr(key, t.rawKeys))
	if name := lockName(t.lockName, key); name != "" {
		kv = append(kv, attribute.String(AttrLockName, name))
	}
	span.SetAttributes(append(kv, more...)...)
}

func (t *tracing) lockStart(ctx context.Context, ev mutex.LockStart) context.Context {
	name := SpanTryLock
	if ev.Wait {
		name = SpanLock
	}
	ctx, span := t.tracer.Start(ctx, name, t.localSpan...)
	if !span.IsRecording() {
		return ctx // nothing to end: a non-recording span's End does nothing
	}
	t.setAttrs(span, attribute.String(AttrDriver, ev.Driver), ev.Key)
	return context.WithValue(ctx, lockSpanKey{t}, span)
}

func (t *tracing) lockDone(ctx context.Context, d mutex.LockDone) {
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

// inLease returns the lease's context with this tracing value's Lock span
// as the parent of what follows, where the context has it.
func (t *tracing) inLease(ctx context.Context) context.Context {
	if span, ok := ctx.Value(lockSpanKey{t}).(trace.Span); ok {
		return trace.ContextWithSpan(ctx, span)
	}
	return ctx
}

// leaseEnd records a lease that was lost or closed as a child of its Lock's
// span; one that was unlocked has its release span already.
func (t *tracing) leaseEnd(ctx context.Context, ev mutex.LeaseEnd) {
	out := leaseOutcome(ev.Err)
	name := SpanLost
	switch out {
	case OutcomeReleased:
		return
	case OutcomeClosed:
		name = SpanClosed
	}
	_, span := t.tracer.Start(t.inLease(ctx), name, t.localSpan...)
	if span.IsRecording() {
		t.setAttrs(span, attribute.String(AttrDriver, ev.Driver), ev.Key, attribute.String(AttrOutcome, out))
		if out == OutcomeLost {
			span.RecordError(ev.Err)
			span.SetStatus(codes.Error, "lease lost")
		}
	}
	span.End()
}

// renewed records a renewal that failed as a child of its Lock's span,
// spanning the renewal call. One that found the lease gone shows as the
// lease's loss (leaseEnd); one that succeeded makes no span.
func (t *tracing) renewed(ctx context.Context, ev mutex.Renewed) {
	if outcome(OutcomeRenewed, ev.Err) != OutcomeError {
		return
	}
	end := time.Now()
	_, span := t.tracer.Start(t.inLease(ctx), SpanRenew, trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(end.Add(-ev.Took)))
	if span.IsRecording() {
		t.setAttrs(span, attribute.String(AttrDriver, ev.Driver), ev.Key, attribute.String(AttrOutcome, OutcomeError))
		span.RecordError(ev.Err)
		span.SetStatus(codes.Error, ev.Err.Error())
	}
	span.End(trace.WithTimestamp(end))
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
		if key == "" {
			span.SetAttributes(l.driver)
		} else {
			l.t.setAttrs(span, l.driver, key)
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
