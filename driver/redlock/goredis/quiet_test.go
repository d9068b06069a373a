package goredis_test

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

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
			checkQuietWake(t, holderL, waiterL)
		})
	}
}
