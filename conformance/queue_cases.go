package conformance

import (
	"errors"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// The Queue/ cases check a driver's wait queue (Capabilities.Queue,
// driver.AcquireRequest.Wait) at the driver level, where the order of
// attempts is the case's to choose: each waiter is a Locker of its own, as
// a pod would be, with one owner for all its attempts, as package mutex
// makes them.

// queuePrompt bounds how soon, after a release, the waiter it was kept for
// is served when the case asks all the time: well under driver.QueueHold,
// so that a place that a waiter gave up but that stayed in the queue shows.
const queuePrompt = driver.QueueHold / 2

// deadHeadSlack is how much later than driver.QueueHold after its last
// attempt a head that stopped asking may still hold up the next waiter.
const deadHeadSlack = 2 * time.Second

// keepAliveEvery is how often the waiters of testQueueHeadKilled ask: as
// package mutex does at worst (driver.QueueHold/3), and no more often.
const keepAliveEvery = 500 * time.Millisecond

// keepAliveHeld is how long testQueueHeadKilled's waiters wait for the
// holder before its release: so much longer than keepAliveEvery that a
// place that is never refreshed runs out while the dead head still stands.
const keepAliveHeld = 1 * time.Second

// wakeGrace is how long after the head's wake-up the case waits for
// wake-ups of other waiters, which a herd would send at the same time.
const wakeGrace = 50 * time.Millisecond

// queueWaiter is one waiter of a Queue/ case.
type queueWaiter struct {
	n       int // its place in arrival order, from 1
	l       driver.Locker
	owner   driver.Owner
	wake    chan struct{}
	stop    func()    // its Watch's, once
	lastTry time.Time // just before its last attempt
}

// try makes one waiting attempt.
func (f *fixture) try(w *queueWaiter, key string) error {
	w.lastTry = time.Now()
	_, err := w.l.Acquire(f.ctx, driver.AcquireRequest{Key: key, Owner: w.owner, TTL: suiteTTL, Wait: true})
	return err
}

func (f *fixture) mustQueue(w *queueWaiter, key string) {
	f.Helper()
	if err := f.try(w, key); !errors.Is(err, driver.ErrLocked) {
		f.Fatalf("waiter %d's waiting attempt on a held key: %v; want driver.ErrLocked", w.n, err)
	}
}

// queueUp makes n waiters and queues them on key, which another holds, in
// order: each one's waiting attempt follows the previous one's ErrLocked.
// With watch, each then watches its turn and tries once more, as package
// mutex does; a driver that cannot watch skips the case.
func (f *fixture) queueUp(key string, n int, watch bool) []*queueWaiter {
	f.Helper()
	ws := make([]*queueWaiter, n)
	for i := range ws {
		w := &queueWaiter{n: i + 1, l: f.locker(), owner: driver.NewOwner(), wake: make(chan struct{}, 1)}
		f.mustQueue(w, key)
		if watch {
			stop, err := w.l.Watch(key, w.owner, w.wake)
			if errors.Is(err, driver.ErrUnimplemented) {
				f.Skipf("Watch: %v; waiters poll", err)
			}
			if err != nil {
				f.Fatalf("Watch: %v", err)
			}
			w.stop = sync.OnceFunc(stop)
			f.Cleanup(w.stop)
			f.mustQueue(w, key)
		}
		ws[i] = w
	}
	return ws
}

// served has each of ws make waiting attempts, the last to arrive first,
// round after round every every, until one is granted or within has passed
// (then it returns nil). The attempts keep every waiter's place, and show a
// driver that grants anyone but the head.
func (f *fixture) served(key string, ws []*queueWaiter, within, every time.Duration) (*queueWaiter, time.Duration) {
	f.Helper()
	start := time.Now()
	for {
		for i := len(ws) - 1; i >= 0; i-- {
			err := f.try(ws[i], key)
			if err == nil {
				return ws[i], time.Since(start)
			}
			if !errors.Is(err, driver.ErrLocked) {
				f.Fatalf("waiter %d's waiting attempt: %v", ws[i].n, err)
			}
		}
		if time.Since(start) > within {
			return nil, time.Since(start)
		}
		time.Sleep(every)
	}
}

// mustServe fails unless want, of ws, is the next served, within within.
func (f *fixture) mustServe(key string, ws []*queueWaiter, want *queueWaiter, within time.Duration, after string) {
	f.Helper()
	got, took := f.served(key, ws, within, 10*time.Millisecond)
	switch {
	case got == nil:
		f.Fatalf("after %s, no waiter served within %v; waiter %d was due", after, within, want.n)
	case got != want:
		f.Fatalf("after %s, waiter %d served before waiter %d, which arrived first", after, got.n, want.n)
	}
	f.Logf("after %s, waiter %d served in %v", after, got.n, took.Round(time.Millisecond))
}

func (f *fixture) release(l driver.Locker, key string, owner driver.Owner) {
	f.Helper()
	if err := l.Release(f.ctx, key, owner); err != nil {
		f.Fatalf("Release: %v", err)
	}
}

// holdKey takes key on a Locker of its own, for the waiters to queue
// behind.
func (f *fixture) holdKey(key string) (driver.Locker, driver.Owner) {
	l, owner := f.locker(), driver.NewOwner()
	f.acquire(l, key, owner)
	return l, owner
}

func needsQueue(_ Harness, caps Capabilities) (bool, string) {
	return caps.Queue, "the driver keeps no wait queue (Capabilities.Queue is false)"
}

// testQueueFIFO: waiters are served in the order they queued, whatever
// the order of their later attempts.
func testQueueFIFO(f *fixture) {
	const key, n = "queue-fifo", 5
	holder, owner := f.holdKey(key)
	ws := f.queueUp(key, n, false)
	for i := n - 1; i >= 0; i-- { // a driver that queues again at each attempt reverses them here
		f.mustQueue(ws[i], key)
	}
	f.release(holder, key, owner)
	after := "the holder's release"
	for i, w := range ws {
		f.mustServe(key, ws[i:], w, queuePrompt, after)
		f.release(w.l, key, w.owner)
		after = "the previous waiter's release"
	}
}

// testQueueCancelMidQueue: a waiter that gives up (its Lock's context
// ended: package mutex calls Release) leaves the queue at once, and holds
// up nobody: mid-queue; at the head, the key kept for it, which it then
// passes on; and at the head as its Locker closes. The waiters behind are
// served well within driver.QueueHold.
func testQueueCancelMidQueue(f *fixture) {
	const key = "queue-cancel"
	for _, head := range []string{"is served", "calls Release", "closes its Locker"} {
		holder, owner := f.holdKey(key)
		ws := f.queueUp(key, 3, false)
		if err := ws[1].l.Release(f.ctx, key, ws[1].owner); !errors.Is(err, driver.ErrNotHeld) {
			f.Fatalf("Release by waiter 2, which holds nothing: %v; want driver.ErrNotHeld", err)
		}
		f.release(holder, key, owner) // the key is kept for waiter 1
		after := "waiter 1's release, waiter 2 having left the queue"
		switch head {
		case "is served":
			f.mustServe(key, []*queueWaiter{ws[0], ws[2]}, ws[0], queuePrompt, "the holder's release")
			f.release(ws[0].l, key, ws[0].owner)
		case "calls Release":
			if err := ws[0].l.Release(f.ctx, key, ws[0].owner); !errors.Is(err, driver.ErrNotHeld) {
				f.Fatalf("Release by waiter 1, the key kept for it but not granted: %v; want driver.ErrNotHeld", err)
			}
			after = "waiter 1 gave up (Release) while the key was kept for it, waiter 2 having left the queue"
		case "closes its Locker":
			if err := ws[0].l.Close(); err != nil {
				f.Fatalf("Close of waiter 1's Locker: %v", err)
			}
			after = "waiter 1's Locker closed while the key was kept for it, waiter 2 having left the queue"
		}
		f.mustServe(key, ws[2:], ws[2], queuePrompt, after)
		f.release(ws[2].l, key, ws[2].owner)
	}
}

// testQueueHeadKilled: waiters that keep asking (every keepAliveEvery, as
// package mutex may) keep their places past driver.QueueHold, and a head
// that stops asking without leaving (its process died) holds up the next
// waiter for QueueHold after its last attempt, and no longer. A driver that
// never refreshes a place loses the places of the waiters behind the dead
// head first, and serves them in the order of their later attempts: the
// last to arrive first.
func testQueueHeadKilled(f *fixture) {
	const key = "queue-dead-head"
	holder, owner := f.holdKey(key)
	ws := f.queueUp(key, 3, false)
	queued := time.Now()
	for end := queued.Add(keepAliveHeld); ; { // the head too, so it is alive when the key is kept for it
		time.Sleep(keepAliveEvery)
		for i := len(ws) - 1; i >= 0; i-- {
			f.mustQueue(ws[i], key)
		}
		if time.Now().After(end) {
			break
		}
	}
	dead := ws[0] // asks no more from here
	f.release(holder, key, owner)
	within := driver.QueueHold + deadHeadSlack - time.Since(dead.lastTry)
	switch got, _ := f.served(key, ws[1:], within, keepAliveEvery); got {
	case nil:
		f.Fatalf("the waiters behind a head that stopped asking were not served within QueueHold (%v) + %v of the head's last attempt", driver.QueueHold, deadHeadSlack)
	case ws[2]:
		f.Fatalf("waiter 3 served before waiter 2, which arrived first: a waiter that asks every %v must keep its place (driver.QueueHold after its last attempt); these had asked for %v", keepAliveEvery, time.Since(queued).Round(100*time.Millisecond))
	}
	f.Logf("served %v after the dead head's last attempt", time.Since(dead.lastTry).Round(time.Millisecond))
	f.release(ws[1].l, key, ws[1].owner)
}

// oneWakePasses is how many times testQueueOneWake queues its waiters and
// hands the key down the queue.
const oneWakePasses = 3

// testQueueOneWake: with several waiters queued and watching, a release
// wakes the head and not the others. Wake-ups are hints and spurious ones
// are allowed (a subscription's first message, say), so a few are
// forgiven; a herd, every waiter woken by every release, is not.
func testQueueOneWake(f *fixture) {
	const key, n = "queue-one-wake", 4
	var releases, others int
	for pass := 1; pass <= oneWakePasses; pass++ {
		holder, owner := f.holdKey(key)
		ws := f.queueUp(key, n, true)
		for _, w := range ws {
			drain(w.wake) // a subscription's own "try again"
		}
		release := func() { f.release(holder, key, owner) }
		for i, w := range ws {
			release()
			releases++
			select {
			case <-w.wake:
			case <-time.After(wakeWithin):
				f.Fatalf("pass %d: waiter %d, at the head, not woken within %v of the release", pass, w.n, wakeWithin)
			case <-f.ctx.Done():
				f.Fatal(f.ctx.Err())
			}
			time.Sleep(wakeGrace)
			for _, o := range ws[i+1:] {
				select {
				case <-o.wake:
					others++
					f.Logf("pass %d: waiter %d woken by a release while waiter %d was at the head", pass, o.n, w.n)
				default:
				}
			}
			f.mustServe(key, ws[i:], w, wakeWithin, "its wake-up")
			holder, owner = w.l, w.owner
		}
		release()
	}
	if allowed := releases / 4; others > allowed {
		f.Errorf("%d wake-ups of waiters not at the head over %d releases (at most %d forgiven): one release must wake one waiter, the head (driver.Locker.Watch)", others, releases, allowed)
	}
}
