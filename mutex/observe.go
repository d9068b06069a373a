package mutex

import (
	"context"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// observeLockStart calls the observers' LockStart hooks, first listed
// first, threading the context through them.
func (c *Client) observeLockStart(ctx context.Context, ev driver.LockStart) context.Context {
	for _, o := range c.observers {
		if o.LockStart != nil {
			ctx = o.LockStart(ctx, ev)
		}
	}
	return ctx
}

// observeLockDone calls the observers' LockDone hooks, last listed first.
func (c *Client) observeLockDone(ctx context.Context, ev driver.LockDone) {
	for i := len(c.observers) - 1; i >= 0; i-- {
		if o := c.observers[i]; o.LockDone != nil {
			o.LockDone(ctx, ev)
		}
	}
}

func (c *Client) observeEnd(l *Lease, err error) {
	for _, o := range c.observers {
		if o.LeaseEnd != nil {
			o.LeaseEnd(driver.LeaseEnd{Driver: c.driver, Key: l.key, Held: time.Since(l.acquired), Err: err})
		}
	}
}

func (c *Client) observeRenewed(l *Lease, remaining time.Duration, err error) {
	for _, o := range c.observers {
		if o.Renewed != nil {
			o.Renewed(driver.Renewed{Driver: c.driver, Key: l.key, Remaining: remaining, Err: err})
		}
	}
}
