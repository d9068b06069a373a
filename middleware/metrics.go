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
	"github.com/mutexkit/mutexkit/mutex"
)

// Metrics records OpenTelemetry instruments: histograms of acquire-attempt
// latency, Lock wait and hold durations, and of the validity left on a lease
// when it is renewed (its health margin); counters of leases acquired,
// contended attempts, leases lost and failed operations; an up-down counter
// of leases held. Attributes are low-cardinality only: driver, operation,
// outcome; never a key. WithLockName adds a name per lock, from a function
// of the key that returns a bounded set of names.
//
// A lease ended by Client.Close is not lost: it is not counted in
// mutexkit.lease.lost, and its hold duration has the outcome closed.
//
// If the instruments cannot be made (a broken provider), Metrics reports
// the error through otel.Handle and records nothing. With a no-op
// MeterProvider (go.opentelemetry.io/otel/metric/noop) it adds nothing at
// all.
func Metrics(opts ...Option) mutex.Middleware {
	cfg := newConfig(opts)
	mp := cfg.meterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if _, noop := mp.(metricnoop.MeterProvider); noop {
		return mutex.Middleware{}
	}
	m, err := newMeters(mp.Meter(ScopeName))
	if err != nil {
		otel.Handle(err)
		return mutex.Middleware{}
	}
	m.lockName = cfg.lockName
	return mutex.Middleware{
		Wrap: func(next driver.Locker, info mutex.Info) driver.Locker {
			return &metricsLocker{Locker: next, m: m, driver: info.Driver, sets: m.setsNamed(info.Driver, "")}
		},
		Observer: &mutex.Observer{LockDone: m.lockDone, LeaseEnd: m.leaseEnd, Renewed: m.renewed},
	}
}

type meters struct {
	acquireDuration, waitDuration, holdDuration, leaseRemaining metric.Float64Histogram
	acquired, contended, lost, failed                           metric.Int64Counter
	held                                                        metric.Int64UpDownCounter

	lockName func(string) string // WithLockName; nil: none

	mu   sync.RWMutex
	sets map[setsKey]*attrSets
}

// setsKey names a series group: a driver and a lock name ("" for none).
type setsKey struct{ driver, name string }

func newMeters(meter metric.Meter) (*meters, error) {
	m := &meters{sets: make(map[setsKey]*attrSets)}
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
	m.holdDuration = hist(MetricHoldDuration, "How long leases were held, to release, loss or Client.Close.")
	m.leaseRemaining = hist(MetricLeaseRemaining, "Validity a lease had left when its renewal was sent.")
	m.acquired = count(MetricAcquired, "{lease}", "Leases acquired.")
	m.contended = count(MetricContended, "{attempt}", "Acquire attempts that found the key held.")
	m.lost = count(MetricLost, "{lease}", "Leases lost before Unlock (not those ended by Client.Close).")
	m.failed = count(MetricFailed, "{operation}", "Driver operations that failed.")
	var err error
	m.held, err = meter.Int64UpDownCounter(MetricHeld, metric.WithUnit("{lease}"), metric.WithDescription("Leases held now."))
	errs = append(errs, err)
	return m, errors.Join(errs...)
}

// attrSets holds the attribute sets of one driver and lock name, made once,
// as the option slices the instruments take: recording then allocates
// nothing.
type attrSets struct {
	driver, acquired, locked, acquireError                               optSet
	lock, tryLock                                                        [4]optSet // by lockOutcomeIndex
	hold                                                                 [3]optSet // hold duration, by leaseOutcomeIndex
	failedAcquire, failedRelease, failedRenew, failedInspect, failedPing optSet
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

var leaseOutcomes = [3]string{OutcomeReleased, OutcomeLost, OutcomeClosed}

func leaseOutcomeIndex(out string) int {
	for i, o := range leaseOutcomes {
		if o == out {
			return i
		}
	}
	return 1 // lost
}

// setsFor returns the attribute sets for an operation on key.
func (m *meters) setsFor(driverName, key string) *attrSets {
	return m.setsNamed(driverName, lockName(m.lockName, key))
}

func (m *meters) setsNamed(driverName, name string) *attrSets {
	k := setsKey{driverName, name}
	m.mu.RLock()
	s := m.sets[k]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.sets[k]; s != nil {
		return s
	}
	base := []attribute.KeyValue{attribute.String(AttrDriver, driverName)}
	if name != "" {
		base = append(base, attribute.String(AttrLockName, name))
	}
	with := func(kv ...attribute.KeyValue) optSet { return newOptSet(append(kv, base...)...) }
	op := func(name string) attribute.KeyValue { return attribute.String(AttrOperation, name) }
	out := func(name string) attribute.KeyValue { return attribute.String(AttrOutcome, name) }
	s = &attrSets{
		driver:        with(),
		acquired:      with(out(OutcomeAcquired)),
		locked:        with(out(OutcomeLocked)),
		acquireError:  with(out(OutcomeError)),
		failedAcquire: with(op(OperationAcquire)),
		failedRelease: with(op(OperationRelease)),
		failedRenew:   with(op(OperationRenew)),
		failedInspect: with(op(OperationInspect)),
		failedPing:    with(op(OperationPing)),
	}
	for i, o := range lockOutcomes {
		s.lock[i] = with(op(OperationLock), out(o))
		s.tryLock[i] = with(op(OperationTryLock), out(o))
	}
	for i, o := range leaseOutcomes {
		s.hold[i] = with(out(o))
	}
	m.sets[k] = s
	return s
}

func (m *meters) lockDone(ctx context.Context, d mutex.LockDone) {
	s := m.setsFor(d.Driver, d.Key)
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

func (m *meters) leaseEnd(ctx context.Context, ev mutex.LeaseEnd) {
	s := m.setsFor(ev.Driver, ev.Key)
	out := leaseOutcome(ev.Err)
	m.held.Add(ctx, -1, s.driver.add...)
	m.holdDuration.Record(ctx, ev.Held.Seconds(), s.hold[leaseOutcomeIndex(out)].rec...)
	if out == OutcomeLost {
		m.lost.Add(ctx, 1, s.driver.add...)
	}
}

func (m *meters) renewed(ctx context.Context, ev mutex.Renewed) {
	s := m.setsFor(ev.Driver, ev.Key)
	m.leaseRemaining.Record(ctx, ev.Remaining.Seconds(), s.driver.rec...)
}

type metricsLocker struct {
	driver.Locker
	m      *meters
	driver string
	sets   *attrSets // with no lock name
}

// setsFor returns the attribute sets for an operation on key.
func (l *metricsLocker) setsFor(key string) *attrSets {
	if l.m.lockName == nil {
		return l.sets
	}
	return l.m.setsFor(l.driver, key)
}

func (l *metricsLocker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	start := time.Now()
	g, err := l.Locker.Acquire(ctx, req)
	took := time.Since(start).Seconds()
	s := l.setsFor(req.Key)
	switch outcome(OutcomeAcquired, err) {
	case OutcomeAcquired:
		l.m.acquireDuration.Record(ctx, took, s.acquired.rec...)
	case OutcomeLocked:
		l.m.acquireDuration.Record(ctx, took, s.locked.rec...)
		l.m.contended.Add(ctx, 1, s.driver.add...)
	default:
		l.m.acquireDuration.Record(ctx, took, s.acquireError.rec...)
		l.m.failed.Add(ctx, 1, s.failedAcquire.add...)
	}
	return g, err
}

func (l *metricsLocker) Release(ctx context.Context, key string, owner driver.Owner) error {
	err := l.Locker.Release(ctx, key, owner)
	if isFailure(outcome(OutcomeReleased, err)) {
		l.m.failed.Add(ctx, 1, l.setsFor(key).failedRelease.add...)
	}
	return err
}

func (l *metricsLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	l.Locker.Renew(ctx, batch)
	for _, r := range batch {
		if isFailure(outcome(OutcomeRenewed, r.Err)) {
			l.m.failed.Add(ctx, 1, l.setsFor(r.Key).failedRenew.add...)
		}
	}
}

func (l *metricsLocker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	h, held, err := l.Locker.Inspect(ctx, key)
	if isFailure(outcome(OutcomeOK, err)) {
		l.m.failed.Add(ctx, 1, l.setsFor(key).failedInspect.add...)
	}
	return h, held, err
}

func (l *metricsLocker) Ping(ctx context.Context) error {
	err := l.Locker.Ping(ctx)
	if err != nil {
		l.m.failed.Add(ctx, 1, l.sets.failedPing.add...)
	}
	return err
}
