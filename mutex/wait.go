package mutex

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Backoff between attempts of a waiting Lock. Drivers that signal releases
// wake a waiter at once; the timer is then only a fallback for what no
// signal announces (an abandoned lock expiring, a crashed holder's session
// ending), so it may back off further.
const (
	minBackoff         = 2 * time.Millisecond
	maxBackoff         = 250 * time.Millisecond
	maxBackoffWatching = time.Second
)

// waiter is one Lock's wait for a held key: the driver's wake-ups, and a
// timer with capped, jittered exponential backoff.
type waiter struct {
	wake       chan struct{}
	stopWatch  func()
	timer      *time.Timer
	maxBackoff time.Duration
}

// newWaiter subscribes to key's releases before the first attempt, so a
// release between an attempt and the wait is not missed.
func newWaiter(l driver.Locker, key string) *waiter {
	w := &waiter{wake: make(chan struct{}, 1), maxBackoff: maxBackoff}
	if stop, err := l.Watch(key, w.wake); err == nil {
		w.stopWatch = stop
		w.maxBackoff = maxBackoffWatching
	}
	return w
}

// wait returns when the key may be free, or with ctx's cause or
// errClientClosed.
func (w *waiter) wait(ctx context.Context, closing <-chan struct{}, attempts int) error {
	d := min(minBackoff<<min(attempts-1, 20), w.maxBackoff)
	d = d/2 + rand.N(d/2+1) // jitter keeps waiters from retrying in step
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	select {
	case <-w.wake:
		return nil
	case <-w.timer.C:
		return nil
	case <-ctx.Done():
		return ctxErr(ctx)
	case <-closing:
		return errClientClosed
	}
}

func (w *waiter) stop() {
	if w.stopWatch != nil {
		w.stopWatch()
	}
	if w.timer != nil {
		w.timer.Stop()
	}
}
