package mutex

import (
	"context"
	"time"
)

// observeLockStart calls the observers' LockStart hooks, first listed
// first, threading the context through them.
func (c *Client) observeLockStart(ctx context.Context, ev LockStart) context.Context {
	for _, o := range c.observers {
		if o.LockStart != nil {
			ctx = o.LockStart(ctx, ev)
		}
	}
	return ctx
}

// observeLockDone calls the observers' LockDone hooks, last listed first.
func (c *Client) observeLockDone(ctx context.Context, ev LockDone) {
	for i := len(c.observers) - 1; i >= 0; i-- {
		if o := c.observers[i]; o.LockDone != nil {
			o.LockDone(ctx, ev)
		}
	}
}

func (c *Client) observeEnd(l *Lease, err error) {
	for _, o := range c.observers {
		if o.LeaseEnd != nil {
			o.LeaseEnd(l.observeCtx(), LeaseEnd{Driver: c.driver, Key: l.key, Held: time.Since(l.acquired), Err: err})
		}
	}
}

func (c *Client) observeRenewed(l *Lease, remaining, took time.Duration, err error) {
	for _, o := range c.observers {
		if o.Renewed != nil {
			o.Renewed(l.observeCtx(), Renewed{Driver: c.driver, Key: l.key, Remaining: remaining, Took: took, Err: err})
		}
	}
}

// observeCtx is the context the lease's observers see: the one their
// LockStart returned, detached (set before the lease was granted, then
// read-only).
func (l *Lease) observeCtx() context.Context {
	if l.obs == nil {
		return context.Background()
	}
	return l.obs
}

// detachedCtx has its parent's values and none of its cancellation, as
// context.WithoutCancel: whose Value allocates on every call (it passes
// itself by value), and observers look values up in every hook.
// (context.Cause of it is nil, as its Err is.)
type detachedCtx struct{ parent context.Context }

func (*detachedCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (*detachedCtx) Done() <-chan struct{}       { return nil }
func (*detachedCtx) Err() error                  { return nil }
func (d *detachedCtx) Value(key any) any         { return d.parent.Value(key) }
