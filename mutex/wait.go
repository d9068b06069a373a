package mutex

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Backoff between attempts of a waiting Lock. A driver that signals
// releases (Watch) wakes the waiter whose turn it is; the timer is then
// only a fallback for what no signal announces (an abandoned lock
// expiring, a crashed holder's session ending, a lost wake-up), and keeps
// the waiter's place in the driver's queue: attempts then come every
// watchPoll or so, whatever the number of waiters, instead of a ramp from
// minBackoff that would cost the server a few attempts per waiter per
// wait.
const (
	minBackoff = 2 * time.Millisecond
	maxBackoff = 250 * time.Millisecond
	watchPoll  = driver.QueueHold / 3 // a live waiter keeps its place in a queue

	// maxWakeGate caps how long a waiter whose wake-ups keep failing lets
	// the next one wait (see waiter.wait): a storm of wake-ups then costs
	// at most 125 attempts a second, and waiters that lose the race for a
	// real release to each other still hand the key on within a
	// millisecond or so (8 ms keeps BenchmarkHandoff's median as it was
	// without a gate; 32 ms tripled it).
	maxWakeGate = 8 * time.Millisecond
)

// waiter is one Lock's wait for a held key: the driver's wake-ups, and a
// timer with capped, jittered exponential backoff.
type waiter struct {
	wake         chan struct{}
	watchRefused bool   // Watch returned ErrUnimplemented: the driver is polled
	stopWatch    func() // set while the driver signals
	timer        *time.Timer

	// fruitless counts the wake-ups in a row that did not lead to a grant.
	// Each doubles the time a wake-up must wait after the previous attempt,
	// so that wake-ups arriving faster than the key changes hands (a storm
	// of spurious ones, another waiter's failed attempts) cannot turn the
	// wait into a loop of attempts.
	fruitless int
	woken     bool      // the last wait ended by a wake-up
	lastTry   time.Time // when the last wait ended, and an attempt followed
}

func newWaiter() *waiter {
	return &waiter{wake: make(chan struct{}, 1)}
}

// watch subscribes to owner's turn on key, and reports whether it did just
// now. Lock calls it after an attempt found the key held, so that a driver
// that queues has queued the owner. A driver that cannot watch
// (ErrUnimplemented) is polled and never asked again; one that failed
// otherwise is asked again after the next attempt that finds the key held.
func (w *waiter) watch(l driver.Locker, key string, owner driver.Owner) bool {
	if w.stopWatch != nil || w.watchRefused {
		return false
	}
	stop, err := l.Watch(key, owner, w.wake)
	if err != nil {
		w.watchRefused = errors.Is(err, driver.ErrUnimplemented)
		return false
	}
	w.stopWatch = stop
	return true
}

// wait returns when the key may be free, or with ctx's cause or
// errClientClosed. It is called after a failed attempt; held says that the
// attempt found the key held (rather than the backend out of reach, which
// no wake-up announces the end of).
func (w *waiter) wait(ctx context.Context, closing <-chan struct{}, attempts int, held bool) error {
	if w.woken {
		w.fruitless++
	}
	d := min(minBackoff<<min(attempts-1, 20), maxBackoff)
	if w.stopWatch != nil && held {
		d = watchPoll
	}
	d = d/2 + rand.N(d/2+1) // jitter keeps waiters from retrying in step
	w.arm(d)
	var gate <-chan time.Time // while set, a wake-up waits for it
	if w.fruitless > 0 {
		g := min(minBackoff<<min(w.fruitless-1, 20), maxWakeGate)
		if rest := g - time.Since(w.lastTry); rest > 0 {
			gateTimer := time.NewTimer(rest)
			defer gateTimer.Stop()
			gate = gateTimer.C
		}
	}
	for {
		wake := w.wake
		if gate != nil {
			wake = nil
		}
		select {
		case <-wake:
			return w.ended(true)
		case <-gate:
			gate = nil
		case <-w.timer.C:
			return w.ended(false)
		case <-ctx.Done():
			return ctxErr(ctx)
		case <-closing:
			return errClientClosed
		}
	}
}

func (w *waiter) arm(d time.Duration) {
	if w.timer == nil {
		w.timer = time.NewTimer(d)
		return
	}
	w.timer.Reset(d)
}

func (w *waiter) ended(woken bool) error {
	w.woken = woken
	w.lastTry = time.Now()
	return nil
}

func (w *waiter) stop() {
	if w.stopWatch != nil {
		w.stopWatch()
	}
	if w.timer != nil {
		w.timer.Stop()
	}
}
