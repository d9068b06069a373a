package goredis_test

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// testClusterManyKeys: a Locker waiting on more keys than it subscribes
// to at once (128, watch.go) holds a bounded number of sharded
// subscriptions, one per key it took: Watch refuses the others
// (driver.ErrUnimplemented, so that package mutex polls them), and a
// waiter of such a key is served by its next attempt, which reaches the
// server though nothing woke it. Keys no longer waited on, lingering,
// make room for a new one. Close ends every subscription and goroutine.
func testClusterManyKeys(t *testing.T, c *cluster) {
	const n = 160
	holderL := c.locker()
	conn := c.connector()
	before := runtime.NumGoroutine()
	waiterL, err := conn.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer waiterL.Close()
	holders, waiters := make([]driver.Owner, n), make([]driver.Owner, n)
	var refused []int
	for i := range n {
		key := fmt.Sprint("m", i)
		holders[i], waiters[i] = driver.NewOwner(), driver.NewOwner()
		if _, err := holderL.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: holders[i], TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
		if _, err := waiterL.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: waiters[i], TTL: ttl, Wait: true}); !errors.Is(err, driver.ErrLocked) {
			t.Fatalf("waiting attempt on %s: %v; want ErrLocked", key, err)
		}
		stop, err := waiterL.Watch(key, waiters[i], make(chan struct{}, 1))
		switch {
		case errors.Is(err, driver.ErrUnimplemented):
			refused = append(refused, i)
		case err != nil:
			t.Fatalf("Watch %s: %v", key, err)
		default:
			defer stop()
		}
	}
	if len(refused) == 0 {
		t.Fatalf("Watch took all %d keys: a connection per key and node, unbounded", n)
	}
	channels := func() int {
		total := 0
		for _, m := range c.rc.Masters() {
			total += len(c.pubsub(m, "SHARDCHANNELS", c.prefix+"*"))
		}
		return total
	}
	want := n - len(refused)
	for deadline := time.Now().Add(15 * time.Second); channels() != want; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d shard channels subscribed; want %d (one per key Watch took, %d refused)", channels(), want, len(refused))
		}
	}

	// A refused key's waiter is woken by nobody: its attempts reach the
	// server, and the first after the release is granted.
	i := refused[0]
	key := fmt.Sprint("m", i)
	if _, err := waiterL.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: waiters[i], TTL: ttl, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt on %s: %v; want ErrLocked", key, err)
	}
	if err := holderL.Release(t.Context(), key, holders[i]); err != nil {
		t.Fatal(err)
	}
	if _, err := waiterL.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: waiters[i], TTL: ttl, Wait: true}); err != nil {
		t.Fatalf("the polled key's waiter, after the release: %v; want granted", err)
	}

	// The other waits end: their keys linger (driver.QueueHold), and a
	// new key's wait takes the room of one of them at once.
	for j := range n {
		waiterL.Release(t.Context(), fmt.Sprint("m", j), waiters[j]) // leaves the queue; not held: an error
	}
	if _, err := holderL.Acquire(t.Context(), driver.AcquireRequest{Key: "mx", Owner: driver.NewOwner(), TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	other := driver.NewOwner()
	if _, err := waiterL.Acquire(t.Context(), driver.AcquireRequest{Key: "mx", Owner: other, TTL: ttl, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt on mx: %v; want ErrLocked", err)
	}
	stop, err := waiterL.Watch("mx", other, make(chan struct{}, 1))
	if err != nil {
		t.Fatalf("Watch of a new key while the others linger: %v; want a lingering key's room", err)
	}
	defer stop()

	if err := waiterL.Close(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); channels() > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d shard channels still subscribed after Close", channels())
		}
	}
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before Connect:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
	}
}
