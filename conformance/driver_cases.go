package conformance

import (
	"errors"

	"github.com/mutexkit/mutexkit/driver"
)

// The Driver/... cases check single driver calls: what package mutex
// cannot see for itself, such as a release by a stranger.

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
	return g
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

// testDriverRenewNeedsOwner: only the owner can extend.
func testDriverRenewNeedsOwner(f *fixture) {
	a, b := f.locker(), f.locker()
	owner := driver.NewOwner()
	f.acquire(a, "renew-owner", owner)
	batch := []driver.Renewal{
		{Key: "renew-owner", Owner: driver.NewOwner(), TTL: suiteTTL},
		{Key: "renew-owner", Owner: owner, TTL: suiteTTL},
		{Key: "renew-never-held", Owner: owner, TTL: suiteTTL},
	}
	b.Renew(f.ctx, batch[:1])
	a.Renew(f.ctx, batch[1:])
	if !errors.Is(batch[0].Err, driver.ErrNotHeld) {
		f.Errorf("Renew by a stranger: %v; want driver.ErrNotHeld", batch[0].Err)
	}
	if batch[1].Err != nil || batch[1].Validity <= 0 {
		f.Errorf("Renew by the owner: validity %v, %v", batch[1].Validity, batch[1].Err)
	}
	if !errors.Is(batch[2].Err, driver.ErrNotHeld) {
		f.Errorf("Renew of a key never held: %v; want driver.ErrNotHeld", batch[2].Err)
	}
	if err := a.Release(f.ctx, "renew-owner", owner); err != nil {
		f.Fatalf("Release: %v", err)
	}
}
