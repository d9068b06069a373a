package goredis_test

import (
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
				records := ns.records // one server's lock is a list (list.go), which GET cannot read
				if n == 1 {
					records = nil
				}
				wake := watchQueued(t, holderL, waiterL, "w", holder, waiter, ttl, records)
				// Every node's confirmation must be in before the release,
				// so that a later wake is the release's.
				time.Sleep(200 * time.Millisecond)
				for len(wake) > 0 {
					<-wake
				}
				releaseWakes(t, holderL, waiterL, "w", holder, waiter, wake)
			})
		}
	}
}
