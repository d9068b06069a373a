package redlock_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
)

// Liveness of the wait queue: a waiter the server keeps the key for is
// not held up by the client, nor by a waiter that has gone.

// woken waits for a value on wake, for 10 s at most.
func woken(t *testing.T, wake <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no wake-up within 10s", what)
	}
}

// watchQuiet watches key for owner until the test ends, and returns the
// channel once the subscriptions of l's nodes are confirmed and the
// wake-ups of the confirmations (which wake every waiter) drained.
func watchQuiet(t *testing.T, l driver.Locker, nodes int, key string, owner driver.Owner) <-chan struct{} {
	t.Helper()
	wake := make(chan struct{}, 1)
	stop, err := l.Watch(key, owner, wake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	subscribed(t, l, nodes)
	for len(wake) > 0 {
		<-wake
	}
	return wake
}

// subscribed waits until n of l's subscriptions are confirmed, and the
// wake-ups their confirmations send have been sent.
func subscribed(t *testing.T, l driver.Locker, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for redlock.Subscribed(l) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d subscriptions confirmed after 10s", redlock.Subscribed(l), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // a confirmation's wake-ups follow its count
}

// TestFailedAttemptAsksAgain: a waiting attempt that fails by a timeout
// (the nodes' writes paused) after the key was kept for its waiter does
// not make the client answer the next attempt itself: the next one
// reaches the nodes, which keep the key for it, and takes it.
func TestFailedAttemptAsksAgain(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(map[int]string{1: "1node", 3: "3nodes"}[n], func(t *testing.T) {
			c := startCluster(t, n)
			c.opts = []redlock.Option{redlock.WithoutListQueue()} // a woken waiter of the list asks nothing
			holder, wl := c.locker(), c.locker()
			h, w := driver.NewOwner(), driver.NewOwner()
			if _, err := acquire(t, holder, "k", h); err != nil {
				t.Fatal(err)
			}
			c.heldEverywhere(t, "k")
			wake := watchQuiet(t, wl, n, "k", w)
			mustWaitLocked(t, wl, "k", w)
			if err := holder.Release(t.Context(), "k", h); err != nil {
				t.Fatal(err)
			}
			woken(t, wake, "the release")
			paused := []int{0}
			if n == 3 {
				paused = []int{0, 1}
			}
			const pause = 400 * time.Millisecond // twice the node timeout (TTL/10)
			began := time.Now()
			for _, i := range paused {
				if _, err := c.do(i, "CLIENT", "PAUSE", pause.Milliseconds(), "WRITE"); err != nil {
					t.Fatal(err)
				}
			}
			if err := waitAttempt(t, wl, "k", w); !errors.Is(err, driver.ErrUnavailable) {
				t.Fatalf("attempt while the nodes' writes are paused: %v; want ErrUnavailable", err)
			}
			time.Sleep(time.Until(began.Add(pause + 100*time.Millisecond)))
			if err := waitAttempt(t, wl, "k", w); err != nil {
				t.Fatalf("attempt after the pause, the key kept for the waiter: %v", err)
			}
		})
	}
}

// queued reports whether owner is in key's queue on server i: its list
// (list.go) or its sorted set (queue.go).
func (c *cluster) queued(t *testing.T, i int, key string, owner driver.Owner) bool {
	t.Helper()
	members, err := redis.Strings(c.do(i, "ZRANGE", c.lockKey(key)+":q", 0, -1))
	if typ, _ := redis.String(c.do(i, "TYPE", c.lockKey(key))); typ == "list" {
		members, err = redis.Strings(c.do(i, "LRANGE", c.lockKey(key), 0, -1))
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if strings.HasPrefix(m, owner.String()) {
			return true
		}
	}
	return false
}

// TestWinnerLeavesEveryQueue: a waiter granted the key on a quorum while
// the other nodes (held elsewhere) queued it leaves their queues when it
// releases, so they do not keep the key for it: the next waiter takes it
// on every node.
func TestWinnerLeavesEveryQueue(t *testing.T) {
	c := startCluster(t, 5)
	wl, vl := c.locker(), c.locker()
	w, v := driver.NewOwner(), driver.NewOwner()
	c.plant(t, "k", driver.NewOwner(), 3, 4) // a minority held elsewhere
	if err := waitAttempt(t, wl, "k", w); err != nil {
		t.Fatalf("waiting attempt with 2 of 5 held elsewhere: %v", err)
	}
	redlock.Settle(wl) // nodes 3 and 4 queued w
	mustWaitLocked(t, vl, "k", v)
	if err := c.delete("k", 3, 4); err != nil { // the minority's holder gone
		t.Fatal(err)
	}
	if err := wl.Release(t.Context(), "k", w); err != nil {
		t.Fatal(err)
	}
	redlock.Settle(wl)
	for i := range c.servers {
		if c.queued(t, i, "k", w) {
			t.Errorf("node %d: the released winner is still queued", i)
		}
	}
	if err := waitAttempt(t, vl, "k", v); err != nil {
		t.Fatalf("the next waiter after the release: %v", err)
	}
	redlock.Settle(vl)
	for i := range c.servers {
		if got := c.owner(i, "k"); got != v.String() {
			t.Errorf("node %d holds %q; want the next waiter", i, got)
		}
	}
}

// TestCloseEndsPlaces: a Locker closed while its owner waits takes it
// out of the queue: the holder's release keeps the key for the next
// waiter, granted well before the closed one's place would have expired
// (driver.QueueHold).
func TestCloseEndsPlaces(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(map[int]string{1: "1node", 3: "3nodes"}[n], func(t *testing.T) {
			c := startCluster(t, n)
			holder, gone, next := c.locker(), c.locker(), c.locker()
			h, g, v := driver.NewOwner(), driver.NewOwner(), driver.NewOwner()
			if _, err := acquire(t, holder, "k", h); err != nil {
				t.Fatal(err)
			}
			c.heldEverywhere(t, "k")
			mustWaitLocked(t, gone, "k", g)
			mustWaitLocked(t, next, "k", v)
			if err := gone.Close(); err != nil {
				t.Fatal(err)
			}
			for i := range c.servers {
				if c.queued(t, i, "k", g) {
					t.Errorf("node %d: the closed Locker's waiter is still queued", i)
				}
			}
			if err := holder.Release(t.Context(), "k", h); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for {
				err := waitAttempt(t, next, "k", v)
				if err == nil {
					t.Logf("the next waiter granted %v after the release", time.Since(start).Round(time.Millisecond))
					return
				}
				if !errors.Is(err, driver.ErrLocked) {
					t.Fatal(err)
				}
				if time.Since(start) > driver.QueueHold/2 {
					t.Fatalf("the next waiter not granted within %v of the release: %v", driver.QueueHold/2, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestManyDeadWaiters: thousands of waiters whose places expired, queued
// ahead of a live one, do not hide it: the release keeps the key for the
// live waiter, and a TryLock is refused.
func TestManyDeadWaiters(t *testing.T) {
	c := startCluster(t, 1)
	c.opts = []redlock.Option{redlock.WithoutListQueue()}
	holder, wl, other := c.locker(), c.locker(), c.locker()
	h, w := driver.NewOwner(), driver.NewOwner()
	if _, err := acquire(t, holder, "k", h); err != nil {
		t.Fatal(err)
	}
	mustWaitLocked(t, wl, "k", w)
	const dead = 2500 // more than one unpack's chunk
	q, qd := []any{c.lockKey("k") + ":q"}, []any{c.lockKey("k") + ":qd"}
	for i := range dead {
		m := driver.NewOwner().String() + "00000000000000" + strconv.Itoa(10+i%90)
		q = append(q, i+1, m)   // arrived first
		qd = append(qd, i+1, m) // deadlines long past
	}
	if _, err := c.do(0, "ZADD", q...); err != nil {
		t.Fatal(err)
	}
	if _, err := c.do(0, "ZADD", qd...); err != nil {
		t.Fatal(err)
	}
	if err := holder.Release(t.Context(), "k", h); err != nil {
		t.Fatal(err)
	}
	if got, want := c.owner(0, "k"), ("q " + w.String())[:32]; got != want {
		t.Fatalf("after the release the key holds %q; want it kept for the live waiter (%q)", got, want)
	}
	if _, err := acquire(t, other, "k", driver.NewOwner()); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("TryLock ahead of the live waiter: %v; want ErrLocked", err)
	}
	if n, err := redis.Int(c.do(0, "ZCARD", c.lockKey("k")+":q")); err != nil || n != 1 {
		t.Fatalf("queue length %d (%v); want the live waiter alone", n, err)
	}
	if err := waitAttempt(t, wl, "k", w); err != nil {
		t.Fatalf("the live waiter: %v", err)
	}
}

// TestReleaseAfterExpiry: a release that finds the key free (the lease
// expired) still keeps it for the queue's head and wakes it.
func TestReleaseAfterExpiry(t *testing.T) {
	c := startCluster(t, 1)
	c.opts = []redlock.Option{redlock.WithoutListQueue()}
	holder, wl := c.locker(), c.locker()
	h, w := driver.NewOwner(), driver.NewOwner()
	if _, err := acquire(t, holder, "k", h); err != nil {
		t.Fatal(err)
	}
	wake := watchQuiet(t, wl, 1, "k", w)
	mustWaitLocked(t, wl, "k", w)
	if err := c.delete("k", 0); err != nil { // the lease expired
		t.Fatal(err)
	}
	if err := holder.Release(t.Context(), "k", h); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release of an expired lease: %v; want ErrNotHeld", err)
	}
	if got, want := c.owner(0, "k"), ("q " + w.String())[:32]; got != want {
		t.Fatalf("after the release the key holds %q; want it kept for the waiter (%q)", got, want)
	}
	woken(t, wake, "the release of an expired lease")
	if err := waitAttempt(t, wl, "k", w); err != nil {
		t.Fatalf("the waiter, woken: %v", err)
	}
}

// TestDeniedAttemptForgetsWait: a waiting attempt refused by the server's
// ACL (driver.ErrDenied, on which package mutex gives up without a
// Release) leaves no wait behind in the Locker.
func TestDeniedAttemptForgetsWait(t *testing.T) {
	c := startCluster(t, 1)
	// Without the scripts (the sorted-set queue's waiting attempt) nor
	// RPUSH (the list's).
	if _, err := c.do(0, "ACL", "SETUSER", "noscript", "on", ">n0script-Pw", "~*", "&*", "+@all", "-evalsha", "-eval", "-rpush"); err != nil {
		t.Fatal(err)
	}
	conn, err := redlock.NewConnector("redis://noscript:n0script-Pw@" + c.servers[0].Addr() + "?prefix=" + c.prefix)
	l := connect(t, conn, err)
	if err := waitAttempt(t, l, "k", driver.NewOwner()); !errors.Is(err, driver.ErrDenied) {
		t.Fatalf("waiting attempt without EVALSHA and RPUSH: %v; want ErrDenied", err)
	}
	if n := redlock.Waits(l); n != 0 {
		t.Fatalf("%d waits kept after a refused attempt; want none", n)
	}
}
