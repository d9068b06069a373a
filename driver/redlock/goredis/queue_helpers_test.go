package goredis_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// watchQueued has holderL take key for holder (for holdTTL), queues waiter
// behind it through waiterL and watches the key for it. It returns the
// wake-up channel once the subscription's confirmation has woken it (Watch
// wakes only on a confirmation or a message, no timer, so with one
// subscription a later wake is a message's; over several nodes each
// confirmation wakes it). The watch stops when the test ends.
//
// Over several nodes, records (nil for one) reads key's lock record on
// each: the waiter queues only once every node has the holder's. An
// acquire returns at a quorum, and a waiter's attempt that reached a late
// node first would take the key there (kept for the waiter once it is
// refused elsewhere), so that node's release would wake nobody.
func watchQueued(t *testing.T, holderL, waiterL driver.Locker, key string, holder, waiter driver.Owner, holdTTL time.Duration, records func(key string) []string) chan struct{} {
	t.Helper()
	if _, err := holderL.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: holder, TTL: holdTTL}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); records != nil && !heldBy(records(key), holder); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after its acquire the holder's record is not on every node: %q", records(key))
		}
	}
	if _, err := waiterL.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: waiter, TTL: ttl, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt: %v; want ErrLocked", err)
	}
	wake := make(chan struct{}, 1)
	stop, err := waiterL.Watch(key, waiter, wake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	select { // the subscriptions' confirmation wakes the key's waiters once
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up at the subscription's confirmation")
	}
	return wake
}

// heldBy reports whether every record is owner's.
func heldBy(records []string, owner driver.Owner) bool {
	for _, r := range records {
		if !strings.HasPrefix(r, owner.String()) {
			return false
		}
	}
	return true
}

// releaseWakes has holderL release key, sees the release wake the watching
// waiter within 10 s, and the woken waiter's next attempt take the key.
func releaseWakes(t *testing.T, holderL, waiterL driver.Locker, key string, holder, waiter driver.Owner, wake <-chan struct{}) {
	t.Helper()
	if err := holderL.Release(t.Context(), key, holder); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("the release woke no waiter within 10s")
	}
	if _, err := waiterL.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: waiter, TTL: ttl, Wait: true}); err != nil {
		t.Fatalf("the woken waiter's attempt: %v", err)
	}
}

// checkQuietWake: a quiet subscription lives on its pings' answers: for
// 12 s (two pings and more than its read deadline) no wake-up comes, which
// a subscription dialled again would give (its confirmation wakes the
// key's waiters); then a release wakes the waiter.
func checkQuietWake(t *testing.T, holderL, waiterL driver.Locker) {
	t.Helper()
	holder, waiter := driver.NewOwner(), driver.NewOwner()
	wake := watchQueued(t, holderL, waiterL, "q", holder, waiter, time.Minute, nil)
	select {
	case <-wake:
		t.Fatal("a wake-up with nothing released: the subscription was dialled again")
	case <-time.After(12 * time.Second):
	}
	// The waiter's place lapsed in the quiet (QueueHold): it asks again,
	// as Lock does every second, before the release.
	if _, err := waiterL.Acquire(t.Context(), driver.AcquireRequest{Key: "q", Owner: waiter, TTL: ttl, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt: %v; want ErrLocked", err)
	}
	if err := holderL.Release(t.Context(), "q", holder); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("the release woke no waiter")
	}
}

// abandoners holds the Lockers a conformance harness's Abandon leaves
// holding their keys, closed when the harness is.
type abandoners struct {
	mu sync.Mutex
	ls []driver.Locker
}

// abandon takes key with a one-second TTL through a Locker of its own from
// c that never renews and is not closed until the harness is.
func (a *abandoners) abandon(ctx context.Context, c driver.Connector, key string) error {
	l, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.ls = append(a.ls, l)
	a.mu.Unlock()
	_, err = l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), TTL: time.Second})
	return err
}

func (a *abandoners) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range a.ls {
		l.Close()
	}
	return nil
}
