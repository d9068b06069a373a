package goredis_test

import (
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
)

// testClusterFailoverResubscribes: when a key's master dies and a replica
// takes over, a waiter's sharded subscription follows to the promoted
// master by itself, with no call of its Locker's to have its client
// reload the slot map (go-redis would otherwise dial the dead address
// until its minute's reload).
func testClusterFailoverResubscribes(t *testing.T, c *cluster) {
	master, key := c.keyWithReplica(t)
	holderL, waiterL := c.locker(), c.locker()
	holder, waiter := driver.NewOwner(), driver.NewOwner()
	watchQueued(t, holderL, waiterL, key, holder, waiter, time.Minute, nil)
	promoted := c.rc.KillMaster(master)
	lock := redlock.LockKey(c.prefix, key)
	for deadline := time.Now().Add(20 * time.Second); len(c.pubsub(promoted, "SHARDCHANNELS", lock+":wake:*")) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("20 s after the failover the promoted master %s has no subscription to the key's channel", promoted.Addr())
		}
	}
}
