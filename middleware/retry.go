package middleware

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// RetryOption configures Retry.
type RetryOption func(*retryConfig)

type retryConfig struct {
	attempts         int
	minWait, maxWait time.Duration
}

// WithAttempts sets how many times an operation is tried in all (default
// 4). Fewer than 1 means 1.
func WithAttempts(n int) RetryOption {
	return func(c *retryConfig) { c.attempts = max(n, 1) }
}

// WithBackoff sets the first and the longest wait between tries (default
// 10 ms and 500 ms); each wait doubles, with jitter.
func WithBackoff(first, longest time.Duration) RetryOption {
	return func(c *retryConfig) {
		c.minWait, c.maxWait = max(first, time.Millisecond), max(longest, first, time.Millisecond)
	}
}

// Retry tries driver operations again when they fail transiently (the
// error matches mutex.ErrUnavailable: the backend was unreachable or did
// not answer in time), with capped exponential backoff and jitter, for as
// long as the context allows. It never retries contention (ErrLocked), a
// lease found gone (ErrNotHeld), a refusal (ErrDenied: credentials,
// configuration) or anything else.
//
// It is for the calls that make one attempt: TryLock, Unlock, Inspect and
// Ping. Lock already waits out an unreachable backend, and renewals are
// retried until the lease's validity runs out; under them Retry multiplies
// the attempts (each of Lock's tries becomes up to WithAttempts), which is
// harmless but adds nothing.
//
// Each repetition is safe:
//   - Acquire is repeated with the same request, so the same owner value: if
//     the first try's grant was made and its reply lost, the retry finds it
//     as its own rather than locking itself out until the TTL.
//   - Release and renew act only where the owner value matches
//     (compare-and-delete, compare-and-extend), so a repeat can never free
//     or extend another holder's lock. A release whose first try went
//     through and whose retry then finds nothing returns ErrNotHeld, which
//     reads as a lost lease: a false alarm, never a hidden loss.
//   - A renewal retries only the leases whose outcome is unknown, within
//     the context package mutex gives it, which ends with the leases'
//     validity.
func Retry(opts ...RetryOption) mutex.Middleware {
	cfg := retryConfig{attempts: 4, minWait: 10 * time.Millisecond, maxWait: 500 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	return mutex.Middleware{Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
		return &retryLocker{Locker: next, cfg: cfg}
	}}
}

type retryLocker struct {
	driver.Locker
	cfg retryConfig
}

func transient(err error) bool { return err != nil && errors.Is(err, driver.ErrUnavailable) }

// pause waits before try number n (from 1), or returns false if ctx ends
// first.
func (l *retryLocker) pause(ctx context.Context, n int) bool {
	d := min(l.cfg.minWait<<min(n-1, 20), l.cfg.maxWait)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// do runs op until it succeeds, fails for good, runs out of tries or ctx
// ends; it returns the last error.
func (l *retryLocker) do(ctx context.Context, op func() error) error {
	err := op()
	for n := 1; transient(err) && n < l.cfg.attempts && l.pause(ctx, n); n++ {
		err = op()
	}
	return err
}

func (l *retryLocker) Acquire(ctx context.Context, req driver.AcquireRequest) (g driver.Grant, err error) {
	err = l.do(ctx, func() error {
		g, err = l.Locker.Acquire(ctx, req)
		return err
	})
	return g, err
}

func (l *retryLocker) Release(ctx context.Context, key string, owner driver.Owner) error {
	return l.do(ctx, func() error { return l.Locker.Release(ctx, key, owner) })
}

func (l *retryLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	l.Locker.Renew(ctx, batch)
	for n := 1; n < l.cfg.attempts; n++ {
		var again []int
		for i := range batch {
			if transient(batch[i].Err) {
				again = append(again, i)
			}
		}
		if len(again) == 0 || !l.pause(ctx, n) {
			return
		}
		retry := make([]driver.Renewal, len(again))
		for j, i := range again {
			retry[j] = driver.Renewal{Key: batch[i].Key, Owner: batch[i].Owner, TTL: batch[i].TTL}
		}
		l.Locker.Renew(ctx, retry)
		for j, i := range again {
			batch[i].Validity, batch[i].Err = retry[j].Validity, retry[j].Err
		}
	}
}

func (l *retryLocker) Inspect(ctx context.Context, key string) (h driver.Holder, held bool, err error) {
	err = l.do(ctx, func() error {
		h, held, err = l.Locker.Inspect(ctx, key)
		return err
	})
	return h, held, err
}

func (l *retryLocker) Ping(ctx context.Context) error {
	return l.do(ctx, func() error { return l.Locker.Ping(ctx) })
}
