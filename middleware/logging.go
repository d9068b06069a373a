package middleware

import (
	"context"
	"log/slog"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Logging writes one structured record per driver operation (acquire
// attempt, release, renewal batch, inspection, ping) and per Lock or
// TryLock, at the level WithLevel sets (Debug by default), and a Warn record
// when an operation fails or a lease is lost. Records carry the driver, the
// operation, the outcome, the duration and a hash of the key (the key
// itself only with WithRawKeys); driver errors never carry a password.
func Logging(logger *slog.Logger, opts ...Option) driver.Middleware {
	if logger == nil {
		logger = slog.Default()
	}
	cfg := newConfig(opts)
	lg := &logging{logger: logger, level: cfg.level, rawKeys: cfg.rawKeys}
	return driver.Middleware{
		Wrap: func(next driver.Locker, info driver.Info) driver.Locker {
			return &loggingLocker{Locker: next, lg: lg, driver: info.Driver}
		},
		Observer: &driver.Observer{LockDone: lg.lockDone, LeaseEnd: lg.leaseEnd},
	}
}

type logging struct {
	logger  *slog.Logger
	level   slog.Level
	rawKeys bool
}

// log writes a record for an operation on key ("" for none). Failures go
// out at Warn at least.
func (lg *logging) log(ctx context.Context, driverName, op, key, out string, took time.Duration, err error, extra ...slog.Attr) {
	level := lg.level
	if isFailure(out) || out == OutcomeLost {
		level = max(level, slog.LevelWarn)
	}
	if !lg.logger.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 6+len(extra))
	attrs = append(attrs,
		slog.String(AttrDriver, driverName),
		slog.String(AttrOperation, op),
		slog.String(AttrOutcome, out),
	)
	if took >= 0 {
		attrs = append(attrs, slog.Duration("duration", took))
	}
	if key != "" {
		kv := keyAttr(key, lg.rawKeys)
		attrs = append(attrs, slog.String(string(kv.Key), kv.Value.AsString()))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	lg.logger.LogAttrs(ctx, level, "mutexkit "+op, append(attrs, extra...)...)
}

func (lg *logging) lockDone(ctx context.Context, d driver.LockDone) {
	op := "trylock"
	if d.Wait {
		op = "lock"
	}
	lg.log(ctx, d.Driver, op, d.Key, lockOutcome(d.Err), d.Waited, d.Err,
		slog.Int(AttrAttempts, d.Attempts), slog.Uint64(AttrToken, d.Token))
}

func (lg *logging) leaseEnd(ev driver.LeaseEnd) {
	out := OutcomeReleased
	if ev.Err != nil {
		out = OutcomeLost
	}
	lg.log(context.Background(), ev.Driver, "lease", ev.Key, out, ev.Held, ev.Err)
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
	l.lg.log(ctx, l.driver, "acquire", req.Key, outcome(OutcomeAcquired, err), took(start), err)
	return g, err
}

func (l *loggingLocker) Release(ctx context.Context, key string, owner driver.Owner) error {
	start := l.clock(ctx)
	err := l.Locker.Release(ctx, key, owner)
	l.lg.log(ctx, l.driver, "release", key, outcome(OutcomeReleased, err), took(start), err)
	return err
}

func (l *loggingLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	start := l.clock(ctx)
	l.Locker.Renew(ctx, batch)
	took := took(start)
	lost, failed := 0, 0
	for _, r := range batch {
		switch out := outcome(OutcomeRenewed, r.Err); {
		case out == OutcomeLost:
			lost++
			l.lg.log(ctx, l.driver, "renew", r.Key, out, took, r.Err)
		case isFailure(out):
			failed++
			l.lg.log(ctx, l.driver, "renew", r.Key, out, took, r.Err)
		}
	}
	if lost+failed == 0 {
		l.lg.log(ctx, l.driver, "renew", "", OutcomeRenewed, took, nil, slog.Int(AttrBatch, len(batch)))
	}
}

func (l *loggingLocker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	start := l.clock(ctx)
	h, held, err := l.Locker.Inspect(ctx, key)
	l.lg.log(ctx, l.driver, "inspect", key, outcome(OutcomeOK, err), took(start), err)
	return h, held, err
}

func (l *loggingLocker) Ping(ctx context.Context) error {
	start := l.clock(ctx)
	err := l.Locker.Ping(ctx)
	l.lg.log(ctx, l.driver, "ping", "", outcome(OutcomeOK, err), took(start), err)
	return err
}
