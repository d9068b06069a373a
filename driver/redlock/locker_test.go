package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
)

// TestInspectQuorum: held means a quorum has one owner.
func TestInspectQuorum(t *testing.T) {
	c := startCluster(t, 5)
	l := c.locker()
	c.plant(t, "partial", driver.NewOwner(), 0, 1)
	if _, held, err := l.Inspect(t.Context(), "partial"); err != nil || held {
		t.Errorf("Inspect of a key on 2 of 5: held %v, %v; want free", held, err)
	}
	owner := driver.NewOwner()
	since := time.Now().Truncate(time.Millisecond)
	_, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "full", Owner: owner, TTL: ttl,
		Holder: driver.Holder{Host: "pod-a", PID: 42, Since: since}})
	if err != nil {
		t.Fatal(err)
	}
	h, held, err := l.Inspect(t.Context(), "full")
	if err != nil || !held || h.Host != "pod-a" || h.PID != 42 || !h.Since.Equal(since) {
		t.Errorf("Inspect: %+v held %v, %v; want pod-a, 42, %v", h, held, err, since)
	}
}

// TestWatchWakes: a release on another client wakes the waiter queued
// behind it, through the subscription and not a timer: the driver has
// none.
func TestWatchWakes(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := startCluster(t, n)
			holder, waiter := c.locker(), c.locker()
			owner := driver.NewOwner()
			if _, err := acquire(t, holder, "w", owner); err != nil {
				t.Fatal(err)
			}
			wake, w := make(chan struct{}, 1), driver.NewOwner()
			mustWaitLocked(t, waiter, "w", w)
			stop, err := waiter.Watch("w", w, wake)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			// The subscriptions' confirmations wake the waiter, once
			// each, if they come after its attempt.
			subscribed(t, waiter, n)
			for len(wake) > 0 {
				<-wake
			}
			if err := holder.Release(t.Context(), "w", owner); err != nil {
				t.Fatal(err)
			}
			select {
			case <-wake:
			case <-time.After(10 * time.Second):
				t.Fatal("no wake-up after a release")
			}
		})
	}
}

// TestCloseWaitsForLateNodes: Close waits for the answers of nodes that
// were late to a call that had returned at quorum, each bounded by its
// timeout, and leaves no goroutine behind.
func TestCloseWaitsForLateNodes(t *testing.T) {
	c := startCluster(t, 5)
	before := runtime.NumGoroutine()
	conn, err := redlock.NewConnector(c.dsn("timeout=1s"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := conn.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c.servers[3].Pause()
	c.servers[4].Pause()
	defer c.servers[3].Resume()
	defer c.servers[4].Resume()
	me := driver.NewOwner()
	if _, err := acquire(t, l, "late", me); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(t.Context(), "late", me); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Close took %v; want the late calls bounded by their 1s timeout", took)
	}
	// A moment for the goroutines Close stopped to return, well short of
	// the late calls' 1s.
	for end := time.Now().Add(300 * time.Millisecond); runtime.NumGoroutine() > before; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d goroutines after Close, %d before Open", runtime.NumGoroutine(), before)
		}
	}
}

// TestReleaseOutlivesCtx: a Redlock release whose ctx ends first says so,
// and the release goes on: the key does not linger until its TTL.
func TestReleaseOutlivesCtx(t *testing.T) {
	c := startCluster(t, 5)
	l := c.locker()
	me := driver.NewOwner()
	if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "cut", Owner: me, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.Release(ctx, "cut", me); !errors.Is(err, context.Canceled) {
		t.Fatalf("release with an ended ctx: %v; want context.Canceled", err)
	}
	c.settledFree(t, l, "cut")
}
