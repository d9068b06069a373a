package mutex

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Mutex is a distributed lock on one key, made by Client.NewMutex. It is
// cheap, safe for concurrent use, and holds nothing itself: each Lock or
// TryLock returns a Lease. Two Mutex values with one key exclude each other,
// whether they share a client or not.
type Mutex struct {
	c   *Client
	key string
	cfg mutexConfig
}

// Key returns the Mutex's key.
func (m *Mutex) Key() string { return m.key }

// Lock waits until it holds the lock or ctx ends. It wakes as soon as the
// driver signals a release, and otherwise polls with capped, jittered
// backoff. When ctx ends it returns an error matching ctx's error (and
// context.Cause), and nothing stays acquired: a grant that races the end is
// released.
func (m *Mutex) Lock(ctx context.Context) (*Lease, error) { return m.acquire(ctx, true) }

// TryLock makes one attempt. It returns an error matching ErrLocked when the
// key is held, by another client or by another Mutex of this one.
func (m *Mutex) TryLock(ctx context.Context) (*Lease, error) { return m.acquire(ctx, false) }

// unlockTimeout bounds the Unlock that Do and TryDo make with a context of
// their own.
const unlockTimeout = 10 * time.Second

// Do waits for the lock (it calls Lock), runs fn while holding it, and
// unlocks. Every caller runs fn in turn: for work that one replica should
// do while the others skip, such as a cron job, use TryDo.
//
// fn's context is cancelled if the lease ends before fn returns: with
// cause ErrLockLost if it is lost, ErrClosed if the client is closed. Do
// unlocks with a context of its own (ctx may be done by then) and returns
// errors.Join of fn's error, the loss, and an Unlock failure. If fn panics,
// Do unlocks and the panic goes on.
func (m *Mutex) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	lease, err := m.Lock(ctx)
	if err != nil {
		return err
	}
	return lease.run(ctx, fn)
}

// TryDo is Do with one attempt (it calls TryLock): when the key is held it
// returns an error matching ErrLocked and does not run fn. It is the cron
// job's call: every replica fires, one runs the job, the others skip.
// With WithMinHold, replicas whose timers fire a little later skip too.
func (m *Mutex) TryDo(ctx context.Context, fn func(ctx context.Context) error) error {
	lease, err := m.TryLock(ctx)
	if err != nil {
		return err
	}
	return lease.run(ctx, fn)
}

// run runs fn under the lease, then unlocks it (Do, TryDo).
func (l *Lease) run(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	fnCtx, cancel := context.WithCancelCause(ctx)
	l.setOnEnd(cancel)
	defer func() { // runs on panic too
		ended := context.Cause(fnCtx) // the lease's end, if it came while fn ran
		cancel(nil)
		// The Lock's observed context, where there is one, has ctx's values
		// and the Lock's own (its span): the release joins the Lock's trace.
		var base context.Context = l.obs
		if l.obs == nil {
			base = context.WithoutCancel(ctx)
		}
		uctx, cancelUnlock := context.WithTimeout(base, unlockTimeout)
		defer cancelUnlock()
		uerr := l.Unlock(uctx) // a loss shows here, as ErrLockLost
		if uerr != nil && !(ended != nil && errors.Is(err, ended) && errors.Is(uerr, ErrNotHeld)) {
			err = errors.Join(err, uerr) // unless fn returned the same end already
		}
	}()
	return fn(fnCtx)
}

func (m *Mutex) acquire(ctx context.Context, wait bool) (*Lease, error) {
	op := "trylock"
	if wait {
		op = "lock"
	}
	if m.cfg.err != nil {
		return nil, opError(op, m.key, m.cfg.err, ErrInvalid)
	}
	c := m.c
	if len(c.observers) == 0 {
		lease, _, err := m.attempt(ctx, wait)
		if err != nil {
			err = m.wrapAcquireError(ctx, op, err)
		}
		return lease, err
	}
	start := time.Now()
	ev := LockDone{LockStart: LockStart{Driver: c.driver, Key: m.key, Wait: wait}}
	ctx = c.observeLockStart(ctx, ev.LockStart)
	lease, attempts, err := m.attempt(ctx, wait)
	if err != nil {
		err = m.wrapAcquireError(ctx, op, err)
	}
	ev.Waited, ev.Attempts, ev.Err = time.Since(start), attempts, err
	if lease != nil {
		ev.Token = lease.token
	}
	c.observeLockDone(ctx, ev)
	return lease, err
}

func (m *Mutex) wrapAcquireError(ctx context.Context, op string, err error) error {
	var we *waitError
	switch {
	case errors.As(err, &we) && errors.Is(we.last, ErrLocked):
		return opError(op, m.key, we.err, ErrLocked)
	case we != nil:
		return opError(op, m.key, err)
	case ctx.Err() != nil && (errors.Is(err, ctx.Err()) || errors.Is(err, context.Cause(ctx))):
		return opError(op, m.key, ctxErr(ctx))
	case errors.Is(err, driver.ErrUnimplemented) && m.cfg.fencing:
		return opError(op, m.key, fmt.Errorf("driver %q cannot issue fencing tokens (WithFencing): %w", m.c.driver, err))
	}
	return opError(op, m.key, err)
}

// attempt reserves the key in the client, then asks the driver until it
// grants the key, or (when wait is false) once.
func (m *Mutex) attempt(ctx context.Context, wait bool) (*Lease, int, error) {
	c := m.c
	if ctx.Err() != nil {
		return nil, 0, ctxErr(ctx)
	}
	l := &Lease{c: c, key: m.key, ttl: m.cfg.ttl, owner: driver.NewOwner()}
	if err := c.reserve(ctx, l, wait); err != nil {
		return nil, 0, err
	}
	var (
		locker       driver.Locker
		w            *waiter // made once the key is found held or the backend out of reach
		last         error   // the last attempt's error, kept when the wait ends
		maybeGranted bool    // an attempt failed in a way that may have left a grant
		queued       bool    // a waiting attempt found the key held: the driver may have queued the owner
	)
	defer func() {
		if w != nil {
			w.stop()
		}
	}()
	req := driver.AcquireRequest{Key: m.key, Owner: l.owner, TTL: m.cfg.ttl, Fencing: m.cfg.fencing, Holder: c.holder, OnLost: l.driverLost, Wait: wait}
	for attempts := 1; ; attempts++ {
		var (
			g   driver.Grant
			err error
		)
		sent := time.Now()
		if locker == nil {
			locker, err = c.conn(ctx)
		}
		if locker != nil {
			req.Holder.Since = sent
			g, err = locker.Acquire(ctx, req)
		}
		switch {
		case err == nil && m.cfg.fencing && g.Token == 0:
			return c.giveUp(l, locker, true, attempts, fmt.Errorf("driver returned no fencing token: %w", driver.ErrUnimplemented))
		case err == nil && ctx.Err() != nil: // granted, but the caller has gone
			return c.giveUp(l, locker, true, attempts, ctxErr(ctx))
		case err == nil:
			if len(c.observers) > 0 {
				// Kept for the lease's observers (renewals, its end, Do's
				// Unlock); a client without observers allocates nothing for it.
				l.obs = &detachedCtx{parent: ctx}
			}
			if err := l.start(g, sent, m.cfg.minHold); err != nil {
				return c.giveUp(l, locker, true, attempts, err)
			}
			return l, attempts, nil
		case errors.Is(err, ErrLocked) && wait,
			errors.Is(err, ErrUnavailable) && wait:
			// Held, or the backend is out of reach for now: keep waiting,
			// with the same owner, so a grant made by an attempt whose reply
			// was lost is found by the next attempt as its own.
			last = err
			maybeGranted = maybeGranted || (locker != nil && errors.Is(err, ErrUnavailable))
			queued = queued || errors.Is(err, ErrLocked)
			if w == nil {
				w = newWaiter()
			}
			if locker != nil && errors.Is(err, ErrLocked) && w.watch(locker, m.key, l.owner) {
				// Subscribed, once the key was found held (and the owner
				// queued, where the driver queues): try again at once, so a
				// release between the attempt and the subscription is not
				// missed. An uncontended Lock never pays for a subscription.
				continue
			}
			if err := w.wait(ctx, c.closeCtx.Done(), attempts, errors.Is(err, ErrLocked)); err != nil {
				// Release also takes the owner out of the key's queue.
				return c.giveUp(l, locker, maybeGranted || queued, attempts, waitEnded(err, last))
			}
		default:
			release := maybeGranted || queued || (locker != nil && mayHaveGranted(err))
			if last != nil && ctx.Err() != nil { // the wait ended during an attempt
				err = waitEnded(ctxErr(ctx), last)
			}
			return c.giveUp(l, locker, release, attempts, err)
		}
	}
}

// waitEnded is the error of a Lock whose wait ended (by ctx, or by Close)
// after last: it keeps last, so that a wait that ran out while the backend
// was unreachable does not read as one that ran out while the key was held.
func waitEnded(err, last error) error {
	if err == errClientClosed || last == nil {
		return err
	}
	return &waitError{err: err, last: last}
}

// waitError is a wait that ended, and the last attempt's outcome.
type waitError struct{ err, last error }

func (e *waitError) Error() string { return e.err.Error() + "; last attempt: " + e.last.Error() }

func (e *waitError) Unwrap() []error { return []error{e.err, e.last} }

// giveUp ends a failed acquire: it frees the key in the client and, when an
// attempt may have taken it on the backend, releases it there with the
// attempt's owner. No attempt with that owner follows, so the release
// cannot undo a later grant.
func (c *Client) giveUp(l *Lease, locker driver.Locker, release bool, attempts int, err error) (*Lease, int, error) {
	if release && locker != nil {
		c.releaseInBackground(locker, l.key, l.owner)
	}
	c.forget(l)
	return nil, attempts, err
}

// mayHaveGranted reports whether a failed acquire could have taken the key
// on the server all the same (the reply was lost, the ctx ended in flight).
func mayHaveGranted(err error) bool {
	return !errors.Is(err, ErrLocked) && !errors.Is(err, ErrInvalid) &&
		!errors.Is(err, driver.ErrUnimplemented) && !errors.Is(err, ErrClosed) &&
		!errors.Is(err, ErrDenied)
}

// start records the grant and makes the lease live: held, and renewed
// (expiring grants) or verified (session grants) by the client's renewer.
func (l *Lease) start(g driver.Grant, sent time.Time, minHold time.Duration) error {
	l.token = g.Token
	l.acquired = sent
	if minHold > 0 {
		l.holdUntil = time.Now().Add(minHold)
	}
	l.validity = g.Validity
	c := l.c
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return errClientClosed
	}
	l.mu.Lock()
	if l.state == stateLost { // the driver reported a loss before we got here
		defer l.mu.Unlock()
		return l.err
	}
	l.state = stateHeld
	if g.Validity > 0 {
		l.lostAt = g.Validity - lossMargin(g.Validity)
	}
	l.mu.Unlock()
	c.renew.add(l)
	return nil
}

// lossMargin is how long before a grant could lapse the client gives it up
// as lost: the room left for a late timer or a short pause of this process.
func lossMargin(validity time.Duration) time.Duration {
	return min(validity/10, time.Second)
}
