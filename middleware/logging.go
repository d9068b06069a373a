package middleware

import (
	"context"
	"log/slog"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Logging writes one structured record per driver operation (acquire
// attempt, release, renewal batch, inspection, ping), per Lock or TryLock
// and per lease's end, at the level WithLevel sets (Debug by default); a
// Warn record when an operation fails or a lease is lost; an Info record
// (or the level set, if higher) when Client.Close ends a lease, which is
// a shutdown, not a loss. Records carry the driver, the operation (one of
// the Operation values), the outcome, the duration and a hash of the key
// (the key itself only with WithRawKeys); driver errors never carry a
// password. A lease's records (its renewals' failures, its end) are logged
// with the context of the Lock that acquired it, so a handler that reads
// the span from the context puts them in the Lock's trace.
func Logging(logger *slog.Logger, opts ...Option) mutex.Middleware {
	if logger == nil {
		logger = slog.Default()
	}
	cfg := newConfig(opts)
	lg := &logging{logger: logger, level: cfg.level, rawKeys: cfg.rawKeys, lockName: cfg.lockName}
	return mutex.Middleware{
		Wrap: func(next driver.Locker, info mutex.Info) driver.Locker {
			return &loggingLocker{Locker: next, lg: lg, driver: info.Driver}
		},
		Observer: &mutex.Observer{LockDone: lg.lockDone, LeaseEnd: lg.leaseEnd, Renewed: lg.renewed},
	}
}

type logging struct {
	logger   *slog.Logger
	level    slog.Level
	rawKeys  bool
	lockName func(string) string
}

// log writes a record for an operation on key ("" for none). Failures and
// losses go out at Warn at least, a lease ended by Client.Close at Info.
func (lg *logging) log(ctx context.Context, driverName, op, key, out string, took time.Duration, err error, extra ...slog.Attr) {
	level := lg.level
	switch {
	case isFailure(out) || out == OutcomeLost:
		level = max(level, slog.LevelWarn)
	case out == OutcomeClosed:
		level = max(level, slog.LevelInfo)
	}
	if !lg.logger.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 7+len(extra))
	attrs = append(attrs,
		slog.String(AttrDriver, driverName),
		slog.String(AttrOperation, op),
		slog.String(AttrOutcome, out),
	)
	if took >= 0 {
		attrs = append(attrs, slog.Duration("duration", took))
	}
	if key != "" {
		if name := lockName(lg.lockName, key); name != "" {
			attrs = append(attrs, slog.String(AttrLockName, name))
		}
		kv := keyAttr(key, lg.rawKeys)
		attrs = append(attrs, slog.String(string(kv.Key), kv.Value.AsString()))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	lg.logger.LogAttrs(ctx, level, "mutexkit "+op, append(attrs, extra...)...)
}

func (lg *logging) lockDone(ctx context.Context, d mutex.LockDone) {
	op := OperationTryLock
	if d.Wait {
		op = OperationLock
	}
	lg.log(ctx, d.Driver, op, d.Key, lockOutcome(d.Err), d.Waited, d.Err,
		slog.Int(AttrAttempts, d.Attempts), slog.Uint64(AttrToken, d.Token))
}

func (lg *logging) leaseEnd(ctx context.Context, ev mutex.LeaseEnd) {
	lg.log(ctx, ev.Driver, OperationLease, ev.Key, leaseOutcome(ev.Err), ev.Held, ev.Err)
}

// renewed logs a lease's renewal that failed or found the lease gone (Warn);
// renewals that succeed are logged per batch by the Locker (Renew).
func (lg *logging) renewed(ctx context.Context, ev mutex.Renewed) {
	if ev.Err == nil {
		return
	}
	lg.log(ctx, ev.Driver, OperationRenew, ev.Key, outcome(OutcomeRenewed, ev.Err), ev.Took, ev.Err)
}

type loggingLocker struct {
	driver.Locker
	lg     *logging
	driver string
}

// clock starts timing an operation if its record would be written at the
// configured level; reading the clock costs more than the rest of a
// disabled record. took then returns -1 (a failure's Warn record carries no
// duration).
func (l *loggingLocker) clock(ctx context.Context) time.Time {
	if l.lg.logger.Enabled(ctx, l.lg.level) {
		return time.Now()
	}
	return time.Time{}
}

func took(start time.Time) time.Duration {
	if start.IsZero() {
		return -1
	}
	return time.Since(start)
}

func (l *loggingLocker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	start := l.clock(ctx)
	g, err := l.Locker.Acquire(ctx, req)
	l.lg.log(ctx, l.driver, OperationAcquire, req.Key, outcome(OutcomeAcquired, err), took(start), err)
	return g, err
}

func (l *loggingLocker) Release(ctx context.Context, key string, owner driver.Owner) error {
	start := l.clock(ctx)
	err := l.Locker.Release(ctx, key, owner)
	l.lg.log(ctx, l.driver, OperationRelease, key, outcome(OutcomeReleased, err), took(start), err)
	return err
}

// Renew logs a batch whose leases were all renewed, as one record; a
// lease's failure is logged by the observer (renewed), with its context.
func (l *loggingLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	start := l.clock(ctx)
	l.Locker.Renew(ctx, batch)
	for _, r := range batch {
		if r.Err != nil {
			return
		}
	}
	l.lg.log(ctx, l.driver, OperationRenew, "", OutcomeRenewed, took(start), nil, slog.Int(AttrBatch, len(batch)))
}

func (l *loggingLocker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	start := l.clock(ctx)
	h, held, err := l.Locker.Inspect(ctx, key)
	l.lg.log(ctx, l.driver, OperationInspect, key, outcome(OutcomeOK, err), took(start), err)
	return h, held, err
}

func (l *loggingLocker) Ping(ctx context.Context) error {
	start := l.clock(ctx)
	err := l.Locker.Ping(ctx)
	l.lg.log(ctx, l.driver, OperationPing, "", outcome(OutcomeOK, err), took(start), err)
	return err
}
