package goredis_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// TestWake: a waiter queued through go-redis is woken by its PubSub when
// the key is kept for it, whichever client released it (go-redis or
// redigo), on one node and on three; its next attempt takes the key.
// Watch wakes only on a subscription's confirmation or a message (no
// timer), so a wake after the confirmation's is the release's.
func TestWake(t *testing.T) {
	for _, n := range []int{1, 3} {
		for _, by := range []string{"go-redis", "redigo"} {
			t.Run(fmt.Sprint(n, "nodes/released by ", by), func(t *testing.T) {
				ns := startNodes(t, n)
				waiterL := ns.locker()
				holderL := ns.locker()
				if by == "redigo" {
					holderL = ns.redigo()
				}
				holder, waiter := driver.NewOwner(), driver.NewOwner()
				if _, err := holderL.Acquire(t.Context(), driver.AcquireRequest{Key: "w", Owner: holder, TTL: ttl}); err != nil {
					t.Fatal(err)
				}
				if _, err := waiterL.Acquire(t.Context(), driver.AcquireRequest{Key: "w", Owner: waiter, TTL: ttl, Wait: true}); !errors.Is(err, driver.ErrLocked) {
					t.Fatalf("waiting attempt: %v; want ErrLocked", err)
				}
				wake := make(chan struct{}, 1)
				stop, err := waiterL.Watch("w", waiter, wake)
				if err != nil {
					t.Fatal(err)
				}
				defer stop()
				select { // the subscriptions' confirmation wakes every waiter once
				case <-wake:
				case <-time.After(10 * time.Second):
					t.Fatal("no wake-up at the subscription's confirmation")
				}
				// Every node's confirmation must be in before the release,
				// so that a later wake is the release's.
				time.Sleep(200 * time.Millisecond)
				for len(wake) > 0 {
					<-wake
				}
				if err := holderL.Release(t.Context(), "w", holder); err != nil {
					t.Fatal(err)
				}
				select {
				case <-wake:
				case <-time.After(10 * time.Second):
					t.Fatal("the release woke no waiter within 10s")
				}
				if _, err := waiterL.Acquire(t.Context(), driver.AcquireRequest{Key: "w", Owner: waiter, TTL: ttl, Wait: true}); err != nil {
					t.Fatalf("the woken waiter's attempt: %v", err)
				}
			})
		}
	}
}
