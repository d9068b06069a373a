package middleware

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/mutexkit/mutexkit/driver"
)

// Metrics records OpenTelemetry instruments: histograms of acquire-attempt
// latency, Lock wait and hold durations, and of the validity left on a lease
// when it is renewed (its health margin); counters of leases acquired,
// contended attempts, leases lost and failed operations; an up-down counter
// of leases held. Attributes are low-cardinality only: driver, operation,
// outcome; never a key.
//
// If the instruments cannot be made (a broken provider), Metrics reports
// the error through otel.Handle and records nothing. With a no-op
// MeterProvider (go.opentelemetry.io/otel/metric/noop) it adds nothing at
// all.
func Metrics(opts ...Option) driver.Middleware {
	cfg := newConfig(opts)
	mp := cfg.meterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if _, noop := mp.(metricnoop.MeterProvider); noop {
		return driver.Middleware{}
	}
	m, err := newMeters(mp.Meter(ScopeName))
	if err != nil {
		otel.Handle(err)
		return driver.Middleware{}
	}
	return driver.Middleware{
		Wrap: func(next driver.Locker, info driver.Info) driver.Locker {
			return &metricsLocker{Locker: next, m: m, sets: m.setsFor(info.Driver)}
		},
		Observer: &driver.Observer{LockDone: m.lockDone, LeaseEnd: m.leaseEnd, Renewed: m.renewed},
	}
}

type meters struct {
	acquireDuration, waitDuration, holdDuration, leaseRemaining metric.Float64Histogram
	acquired, contended, lost, failed                           metric.Int64Counter
	held                                                        metric.Int64UpDownCounter

	mu   sync.Mutex
	sets map[string]*driverSets // by driver name
}

func newMeters(meter metric.Meter) (*meters, error) {
	m := &meters{sets: make(map[string]*driverSets)}
	secondsBuckets := metric.WithExplicitBucketBoundaries(
		0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
	var errs []error
	hist := func(name, desc string) metric.Float64Histogram {
		h, err := meter.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), secondsBuckets)
		errs = append(errs, err)
		return h
	}
	count := func(name, unit, desc string) metric.Int64Counter {
		c, err := meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	m.acquireDuration = hist(MetricAcquireDuration, "Duration of one acquire attempt sent to the driver.")
	m.waitDuration = hist(MetricWaitDuration, "Duration of a whole Lock or TryLock, waiting included.")
	m.holdDuration = hist(MetricHoldDuration, "How long leases were held, to release or loss.")
	m.leaseRemaining = hist(MetricLeaseRemaining, "Validity a lease had left when its renewal was sent.")
	m.acquired = count(MetricAcquired, "{lease}", "Leases acquired.")
	m.contended = count(MetricContended, "{attempt}", "Acquire attempts that found the key held.")
	m.lost = count(MetricLost, "{lease}", "Leases lost before Unlock.")
	m.failed = count(MetricFailed, "{operation}", "Driver operations that failed.")
	var err error
	m.held, err = meter.Int64UpDownCounter(MetricHeld, metric.WithUnit("{lease}"), metric.WithDescription("Leases held now."))
	errs = append(errs, err)
	return m, errors.Join(errs...)
}

// driverSets holds the attribute sets of one driver, made once, as the
// option slices the instruments take: recording then allocates nothing.
type driverSets struct {
	driver, acquired, locked, acquireError             optSet
	lock, tryLock                                      [4]optSet // by lockOutcomeIndex
	failedAcquire, failedRelease, failedRenew, failedX optSet
}

type optSet struct {
	rec []metric.RecordOption
	add []metric.AddOption
}

func newOptSet(kv ...attribute.KeyValue) optSet {
	o := metric.WithAttributeSet(attribute.NewSet(kv...))
	return optSet{rec: []metric.RecordOption{o}, add: []metric.AddOption{o}}
}

var lockOutcomes = [4]string{OutcomeAcquired, OutcomeLocked, OutcomeCanceled, OutcomeError}

func lockOutcomeIndex(out string) int {
	for i, o := range lockOutcomes {
		if o == out {
			return i
		}
	}
	return len(lockOutcomes) - 1
}

func (m *meters) setsFor(driverName string) *driverSets {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.sets[driverName]; s != nil {
		return s
	}
	d := attribute.String(AttrDriver, driverName)
	with := func(kv ...attribute.KeyValue) optSet { return newOptSet(append(kv, d)...) }
	op := func(name string) attribute.KeyValue { return attribute.String(AttrOperation, name) }
	out := func(name string) attribute.KeyValue { return attribute.String(AttrOutcome, name) }
	s := &driverSets{
		driver:        with(),
		acquired:      with(out(OutcomeAcquired)),
		locked:        with(out(OutcomeLocked)),
		acquireError:  with(out(OutcomeError)),
		failedAcquire: with(op("acquire")),
		failedRelease: with(op("release")),
		failedRenew:   with(op("renew")),
		failedX:       with(op("other")),
	}
	for i, o := range lockOutcomes {
		s.lock[i] = with(op("lock"), out(o))
		s.tryLock[i] = with(op("trylock"), out(o))
	}
	m.sets[driverName] = s
	return s
}

func (m *meters) lockDone(ctx context.Context, d driver.LockDone) {
	s := m.setsFor(d.Driver)
	out := lockOutcomeIndex(lockOutcome(d.Err))
	opt := s.tryLock[out]
	if d.Wait {
		opt = s.lock[out]
	}
	m.waitDuration.Record(ctx, d.Waited.Seconds(), opt.rec...)
	if d.Err == nil {
		m.acquired.Add(ctx, 1, s.driver.add...)
		m.held.Add(ctx, 1, s.driver.add...)
	}
}

func (m *meters) leaseEnd(ev driver.LeaseEnd) {
	ctx, s := context.Background(), m.setsFor(ev.Driver)
	m.held.Add(ctx, -1, s.driver.add...)
	m.holdDuration.Record(ctx, ev.Held.Seconds(), s.driver.rec...)
	if ev.Err != nil {
		m.lost.Add(ctx, 1, s.driver.add...)
	}
}

func (m *meters) renewed(ev driver.Renewed) {
	ctx, s := context.Background(), m.setsFor(ev.Driver)
	m.leaseRemaining.Record(ctx, ev.Remaining.Seconds(), s.driver.rec...)
}

type metricsLocker struct {
	driver.Locker
	m    *meters
	sets *driverSets
}

func (l *metricsLocker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	start := time.Now()
	g, err := l.Locker.Acquire(ctx, req)
	took := time.Since(start).Seconds()
	switch outcome(OutcomeAcquired, err) {
	case OutcomeAcquired:
		l.m.acquireDuration.Record(ctx, took, l.sets.acquired.rec...)
	case OutcomeLocked:
		l.m.acquireDuration.Record(ctx, took, l.sets.locked.rec...)
		l.m.contended.Add(ctx, 1, l.sets.driver.add...)
	default:
		l.m.acquireDuration.Record(ctx, took, l.sets.acquireError.rec...)
		l.m.failed.Add(ctx, 1, l.sets.failedAcquire.add...)
	}
	return g, err
}

func (l *metricsLocker) Release(ctx context.Context, key string, owner driver.Owner) error {
	err := l.Locker.Release(ctx, key, owner)
	if isFailure(outcome(OutcomeReleased, err)) {
		l.m.failed.Add(ctx, 1, l.sets.failedRelease.add...)
	}
	return err
}

func (l *metricsLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	l.Locker.Renew(ctx, batch)
	for _, r := range batch {
		if isFailure(outcome(OutcomeRenewed, r.Err)) {
			l.m.failed.Add(ctx, 1, l.sets.failedRenew.add...)
		}
	}
}

func (l *metricsLocker) Ping(ctx context.Context) error {
	err := l.Locker.Ping(ctx)
	if err != nil {
		l.m.failed.Add(ctx, 1, l.sets.failedX.add...)
	}
	return err
}
