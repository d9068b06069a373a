package mutex

import (
	"context"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// observeLockStart calls the observers' LockStart hooks, first listed
// first, threading the context through them. done reports to each, in
// reverse order; it is nil when nobody observes.
func (c *Client) observeLockStart(ctx context.Context, key string, wait bool) (context.Context, func(driver.LockDone)) {
	if len(c.observers) == 0 {
		return ctx, nil
	}
	ev := driver.LockStart{Driver: c.driver, Key: key, Wait: wait}
	var dones []func(driver.LockDone)
	for _, o := range c.observers {
		if o.LockStart == nil {
			continue
		}
		var done func(driver.LockDone)
		ctx, done = o.LockStart(ctx, ev)
		if done != nil {
			dones = append(dones, done)
		}
	}
	return ctx, func(ev driver.LockDone) {
		for i := len(dones) - 1; i >= 0; i-- {
			dones[i](ev)
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
