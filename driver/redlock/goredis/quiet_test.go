package goredis_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
)

// TestSubscriptionStaysUp: a quiet subscription lives on its pings'
// answers, over RESP2 and RESP3: for 12 s (two pings and more than its
// read deadline) no wake-up comes, which a subscription dialled again
// would give (its confirmation wakes every waiter); then a release wakes
// the waiter.
func TestSubscriptionStaysUp(t *testing.T) {
	ns := startNodes(t, 1)
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprint("resp", proto), func(t *testing.T) {
			t.Parallel()
			c := redis.NewClient(&redis.Options{Addr: ns.servers[0].Addr(), Protocol: proto, ContextTimeoutEnabled: true})
			defer c.Close()
			prefix := redlock.WithPrefix(fmt.Sprint(ns.prefix, proto))
			waiterL := connectT(t, goredis.FromClient(c, prefix))
			holderL := connectT(t, goredis.FromClient(c, prefix))
			holder, waiter := driver.NewOwner(), driver.NewOwner()
			if _, err := holderL.Acquire(t.Context(), driver.AcquireRequest{Key: "q", Owner: holder, TTL: time.Minute}); err != nil {
				t.Fatal(err)
			}
			if _, err := waiterL.Acquire(t.Context(), driver.AcquireRequest{Key: "q", Owner: waiter, TTL: ttl, Wait: true}); !errors.Is(err, driver.ErrLocked) {
				t.Fatalf("waiting attempt: %v; want ErrLocked", err)
			}
			wake := make(chan struct{}, 1)
			stop, err := waiterL.Watch("q", waiter, wake)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			select {
			case <-wake:
			case <-time.After(10 * time.Second):
				t.Fatal("no confirmation")
			}
			select {
			case <-wake:
				t.Fatal("a wake-up with nothing released: the subscription was dialled again")
			case <-time.After(12 * time.Second):
			}
			// The waiter's place lapsed in the quiet (QueueHold): it asks
			// again, as Lock does every second, before the release.
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
		})
	}
}
