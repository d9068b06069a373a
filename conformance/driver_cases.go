package conformance

import (
	"errors"
	"fmt"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// The Driver/... cases check single driver calls: what package mutex
// cannot see for itself, such as a release by a stranger. They call a
// Locker only as package mutex would (driver.go, "What package mutex
// guarantees a driver"): keys of 1 to mutex.MaxKeyLen bytes, fresh
// non-zero owners, TTLs within [mutex.MinTTL, mutex.MaxTTL] (0 in Renew
// for a session grant), buffered Watch channels.

// locker connects a new Locker of the backend, closed when the case ends.
func (f *fixture) locker() driver.Locker {
	f.Helper()
	conn, err := f.h.NewConnector(f.ctx)
	if err != nil {
		f.Fatalf("NewConnector: %v", err)
	}
	l, err := conn.Connect(f.ctx)
	if err != nil {
		f.Fatalf("Connect: %v", err)
	}
	f.Cleanup(func() { l.Close() })
	return l
}

func (f *fixture) acquire(l driver.Locker, key string, owner driver.Owner) driver.Grant {
	f.Helper()
	g, err := l.Acquire(f.ctx, driver.AcquireRequest{Key: key, Owner: owner, TTL: suiteTTL})
	if err != nil {
		f.Fatalf("Acquire(%q): %v", key, err)
	}
	if (g.Validity > 0) != f.caps.TTL {
		f.Fatalf("Acquire(%q): Validity %v, but the harness declares TTL %v: a session grant has Validity 0, an expiring one more", key, g.Validity, f.caps.TTL)
	}
	return g
}

// acquireBy takes key for owner on l, trying again while it is held, until
// deadline. A release that returned may still be finishing on some of a
// backend's nodes.
func (f *fixture) acquireBy(l driver.Locker, key string, owner driver.Owner, deadline time.Time) error {
	for {
		_, err := l.Acquire(f.ctx, driver.AcquireRequest{Key: key, Owner: owner, TTL: suiteTTL})
		if err == nil || !errors.Is(err, driver.ErrLocked) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Acquire(%q): still held at the deadline: %w", key, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *fixture) mustBeHeld(l driver.Locker, key, why string) {
	f.Helper()
	_, err := l.Acquire(f.ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), TTL: suiteTTL})
	if !errors.Is(err, driver.ErrLocked) {
		f.Fatalf("Acquire(%q) by a stranger: %v; want driver.ErrLocked (%s)", key, err, why)
	}
}

// testDriverReleaseNeedsOwner: only the owner can release.
func testDriverReleaseNeedsOwner(f *fixture) {
	a, b := f.locker(), f.locker()
	owner := driver.NewOwner()
	f.acquire(a, "owned", owner)
	for _, l := range []driver.Locker{a, b} {
		if err := l.Release(f.ctx, "owned", driver.NewOwner()); !errors.Is(err, driver.ErrNotHeld) {
			f.Fatalf("Release by a stranger: %v; want driver.ErrNotHeld", err)
		}
	}
	f.mustBeHeld(b, "owned", "a stranger's Release must not free it")
	if err := a.Release(f.ctx, "owned", owner); err != nil {
		f.Fatalf("Release by the owner: %v", err)
	}
	if err := a.Release(f.ctx, "owned", owner); !errors.Is(err, driver.ErrNotHeld) {
		f.Fatalf("second Release: %v; want driver.ErrNotHeld", err)
	}
	f.acquire(b, "owned", driver.NewOwner()) // free again
}

// testDriverRetrySameOwner: an attempt retried with its owner finds its own
// grant; a new owner is refused.
func testDriverRetrySameOwner(f *fixture) {
	a := f.locker()
	owner := driver.NewOwner()
	g1 := f.acquire(a, "retry", owner)
	g2, err := a.Acquire(f.ctx, driver.AcquireRequest{Key: "retry", Owner: owner, TTL: suiteTTL})
	if err != nil && !errors.Is(err, driver.ErrLocked) {
		f.Fatalf("retried Acquire with the same owner: %v", err)
	}
	if err == nil && g2.Token != g1.Token {
		f.Fatalf("retried Acquire returned token %d, first %d: a retry must find its own grant, not make another", g2.Token, g1.Token)
	}
	f.mustBeHeld(a, "retry", "it is held")
	if err := a.Release(f.ctx, "retry", owner); err != nil {
		f.Fatalf("Release: %v", err)
	}
}

// renewTTL is the TTL of a Renew element for g, as package mutex sends it:
// an expiring grant is extended, a session grant (Validity 0) verified.
func renewTTL(g driver.Grant) time.Duration {
	if g.Validity == 0 {
		return 0
	}
	return suiteTTL
}

// testDriverRenewNeedsOwner: only the owner can extend or verify a grant.
func testDriverRenewNeedsOwner(f *fixture) {
	a, b := f.locker(), f.locker()
	owner := driver.NewOwner()
	ttl := renewTTL(f.acquire(a, "renew-owner", owner))
	batch := []driver.Renewal{
		{Key: "renew-owner", Owner: driver.NewOwner(), TTL: ttl},
		{Key: "renew-owner", Owner: driver.NewOwner(), TTL: ttl},
		{Key: "renew-owner", Owner: owner, TTL: ttl},
		{Key: "renew-never-held", Owner: owner, TTL: ttl},
	}
	b.Renew(f.ctx, batch[:1])
	a.Renew(f.ctx, batch[1:])
	if !errors.Is(batch[0].Err, driver.ErrNotHeld) {
		f.Errorf("Renew (TTL %v) by a stranger on another Locker: %v; want driver.ErrNotHeld", ttl, batch[0].Err)
	}
	if !errors.Is(batch[1].Err, driver.ErrNotHeld) {
		f.Errorf("Renew (TTL %v) by a stranger on the holding Locker: %v; want driver.ErrNotHeld", ttl, batch[1].Err)
	}
	if batch[2].Err != nil || (ttl > 0 && batch[2].Validity <= 0) {
		f.Errorf("Renew (TTL %v) by the owner: validity %v, %v", ttl, batch[2].Validity, batch[2].Err)
	}
	if !errors.Is(batch[3].Err, driver.ErrNotHeld) {
		f.Errorf("Renew (TTL %v) of a key never held: %v; want driver.ErrNotHeld", ttl, batch[3].Err)
	}
	if err := a.Release(f.ctx, "renew-owner", owner); err != nil {
		f.Fatalf("Release: %v", err)
	}
}

// testDriverRenewFindsLoss: once Vanish has taken a grant, Renew says so
// (driver.ErrNotHeld) within LossWithin, without OnLost, which is only an
// early report: Renew is how package mutex finds every loss, a dead session
// included.
func testDriverRenewFindsLoss(f *fixture) {
	a := f.locker()
	owner := driver.NewOwner()
	ttl := renewTTL(f.acquire(a, "renew-loss", owner))
	if err := f.h.Vanish(f.ctx, "renew-loss"); err != nil {
		f.Fatalf("Vanish: %v", err)
	}
	deadline := time.Now().Add(f.caps.LossWithin)
	for {
		batch := []driver.Renewal{{Key: "renew-loss", Owner: owner, TTL: ttl}}
		a.Renew(f.ctx, batch)
		if errors.Is(batch[0].Err, driver.ErrNotHeld) {
			return
		}
		if time.Now().After(deadline) {
			f.Fatalf("Renew (TTL %v) of a grant Vanish took: %v, still %v later; want driver.ErrNotHeld", ttl, batch[0].Err, f.caps.LossWithin)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// closeTTL is the TTL of the grants testDriverCloseReleases closes: so long
// that a key freed by expiry is not taken for one freed by Close.
const closeTTL = time.Minute

// closeFreeWithin bounds how soon after Locker.Close its keys are free: a
// session backend's server frees them once it sees the session end.
const closeFreeWithin = 10 * time.Second

// testDriverCloseReleases: Locker.Close gives up every key the Locker
// holds, at once. Package mutex's Client.Close releases its leases before
// it closes the Locker, so only a direct call shows a Close that keeps
// keys until their TTL.
func testDriverCloseReleases(f *fixture) {
	a, b := f.locker(), f.locker()
	keys := []string{"close-1", "close-2", "close-3"}
	for _, k := range keys {
		if _, err := a.Acquire(f.ctx, driver.AcquireRequest{Key: k, Owner: driver.NewOwner(), TTL: closeTTL}); err != nil {
			f.Fatalf("Acquire(%q): %v", k, err)
		}
	}
	f.mustBeHeld(b, keys[0], "its Locker holds it")
	if err := a.Close(); err != nil {
		f.Fatalf("Close: %v", err)
	}
	deadline := time.Now().Add(closeFreeWithin)
	for _, k := range keys {
		if err := f.acquireBy(b, k, driver.NewOwner(), deadline); err != nil {
			f.Fatalf("after its Locker's Close (its TTL is %v): %v; Close must release what the Locker holds", closeTTL, err)
		}
	}
}

// testDriverAfterClose: a second Close returns nil, and every call on a
// closed Locker returns driver.ErrClosed (Renew in each element), so that
// a call racing a shutdown reads as one. Watch and Inspect may instead
// still say driver.ErrUnimplemented.
func testDriverAfterClose(f *fixture) {
	a := f.locker()
	owner := driver.NewOwner()
	ttl := renewTTL(f.acquire(a, "after-close", owner))
	if err := a.Close(); err != nil {
		f.Fatalf("Close: %v", err)
	}
	if err := a.Close(); err != nil {
		f.Errorf("second Close: %v; want nil", err)
	}
	closed := func(call string, err error, orUnimplemented bool) {
		f.Helper()
		if !errors.Is(err, driver.ErrClosed) && !(orUnimplemented && errors.Is(err, driver.ErrUnimplemented)) {
			f.Errorf("%s on a closed Locker: %v; want driver.ErrClosed", call, err)
		}
	}
	_, err := a.Acquire(f.ctx, driver.AcquireRequest{Key: "after-close-2", Owner: driver.NewOwner(), TTL: suiteTTL})
	closed("Acquire", err, false)
	closed("Release", a.Release(f.ctx, "after-close", owner), false)
	batch := []driver.Renewal{{Key: "after-close", Owner: owner, TTL: ttl}}
	a.Renew(f.ctx, batch)
	closed(fmt.Sprintf("Renew (TTL %v)", ttl), batch[0].Err, false)
	stop, err := a.Watch("after-close", driver.NewOwner(), make(chan struct{}, 1))
	if err == nil {
		stop()
	}
	closed("Watch", err, true)
	_, _, err = a.Inspect(f.ctx, "after-close")
	closed("Inspect", err, true)
	closed("Ping", a.Ping(f.ctx), false)
}

// wakeWithin bounds how soon a watcher hears of a release.
const wakeWithin = 10 * time.Second

// testDriverWatch: Watch either says the backend cannot signal
// (driver.ErrUnimplemented: package mutex then polls) or wakes its
// channels when another client releases the key, and a stopped watch
// receives nothing more. Spurious wake-ups are allowed, so the case asks
// only for a wake-up after each release, over several rounds: the first
// may be a subscription's own "try again". A driver with a wait queue
// wakes only the owner the key is kept for: testDriverWatchQueue.
func testDriverWatch(f *fixture) {
	if f.caps.Queue {
		testDriverWatchQueue(f)
		return
	}
	holder, watcher := f.locker(), f.locker()
	wake1, wake2 := make(chan struct{}, 1), make(chan struct{}, 1)
	stop1, err := watcher.Watch("watch", driver.NewOwner(), wake1)
	if errors.Is(err, driver.ErrUnimplemented) {
		f.Skipf("Watch: %v; waiters poll", err)
	}
	if err != nil {
		f.Fatalf("Watch: %v", err)
	}
	f.Cleanup(stop1)
	stop2, err := watcher.Watch("watch", driver.NewOwner(), wake2)
	if err != nil {
		f.Fatalf("second Watch of the key: %v", err)
	}
	f.Cleanup(stop2)

	// release takes and releases the key on holder, and waits for a
	// wake-up on each channel in wakes.
	release := func(round int, wakes ...chan struct{}) {
		f.Helper()
		owner := driver.NewOwner()
		if err := f.acquireBy(holder, "watch", owner, time.Now().Add(wakeWithin)); err != nil {
			f.Fatalf("round %d: %v", round, err)
		}
		for _, w := range wakes {
			drain(w)
		}
		if err := holder.Release(f.ctx, "watch", owner); err != nil {
			f.Fatalf("Release: %v", err)
		}
		timeout := time.After(wakeWithin)
		for i, w := range wakes {
			select {
			case <-w:
			case <-timeout:
				f.Fatalf("round %d: watch %d not woken within %v of a release by another client; a Watch that cannot see other clients' releases returns driver.ErrUnimplemented", round, i+1, wakeWithin)
			case <-f.ctx.Done():
				f.Fatalf("round %d: %v", round, f.ctx.Err())
			}
		}
	}
	for round := 1; round <= 3; round++ {
		release(round, wake1, wake2)
	}
	stop1()
	drain(wake1)
	for round := 4; round <= 5; round++ {
		release(round, wake2)
	}
	select {
	case <-wake1:
		f.Fatal("a stopped watch was woken: stop must end its wake-ups")
	default:
	}
}

// testDriverWatchQueue is testDriverWatch for a driver with a wait queue:
// two waiters queue behind a holder, each watching; each release wakes the
// head of the queue, which then takes the key. In the last round the first
// waiter stops its watch before the release, finds its turn by asking, and
// must not be woken.
func testDriverWatchQueue(f *fixture) {
	const key = "watch"
	for r := 1; r <= 4; r++ {
		stopped := r == 4
		holder, owner := f.holdKey(key)
		ws := f.queueUp(key, 2, true)
		if stopped { // before the drain: a wake-up until stop returns is legal
			ws[0].stop()
		}
		for _, w := range ws {
			drain(w.wake) // a subscription's own "try again"
		}
		f.release(holder, key, owner)
		for i, w := range ws {
			if i > 0 || !stopped {
				select {
				case <-w.wake:
				case <-time.After(wakeWithin):
					f.Fatalf("round %d: waiter %d, at the head of the queue, not woken within %v of a release by another client; a Watch that cannot see other clients' releases returns driver.ErrUnimplemented", r, w.n, wakeWithin)
				case <-f.ctx.Done():
					f.Fatalf("round %d: %v", r, f.ctx.Err())
				}
			}
			f.mustServe(key, ws[i:], w, wakeWithin, "the release before it")
			f.release(w.l, key, w.owner)
		}
		if stopped {
			select {
			case <-ws[0].wake:
				f.Fatal("a stopped watch was woken: stop must end its wake-ups")
			default:
			}
		}
	}
}

func drain(c chan struct{}) {
	select {
	case <-c:
	default:
	}
}
