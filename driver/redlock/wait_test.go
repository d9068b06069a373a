package redlock_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

// TestWithdrawWakesNoWaiter: attempts that fail while one owner holds
// the key on a quorum take back their partial grants without waking the
// waiter queued behind it (nor does a waiter's own failed attempt wake
// it, which would turn its wait into a loop of attempts).
func TestWithdrawWakesNoWaiter(t *testing.T) {
	c := startCluster(t, 3)
	holder := driver.NewOwner()
	c.plant(t, "k", holder, 0, 1) // node 2 free: restarted empty, or down at the grant
	l, wl := c.locker(), c.locker()
	w := driver.NewOwner()
	wake := make(chan struct{}, 1)
	stop, err := wl.Watch("k", w, wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	<-wake // the subscriptions' confirmations
	time.Sleep(100 * time.Millisecond)
	for len(wake) > 0 {
		<-wake
	}
	mustWaitLocked(t, wl, "k", w) // granted on node 2, withdrawn: kept there for w
	for range 3 {
		if _, err := acquire(t, l, "k", driver.NewOwner()); !errors.Is(err, driver.ErrLocked) {
			t.Fatalf("Acquire: %v; want ErrLocked", err)
		}
		if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: ttl, Wait: true}); !errors.Is(err, driver.ErrLocked) {
			t.Fatalf("waiting Acquire: %v; want ErrLocked", err)
		}
	}
	if got := c.owner(2, "k"); got[:2] != "q " {
		t.Fatalf("node 2 holds %q; want it kept for the first waiter", got)
	}
	select {
	case <-wake:
		t.Fatal("a failed attempt's withdrawal woke the waiter")
	case <-time.After(300 * time.Millisecond):
	}
}

// TestWaitingLockDoesNotSpin: a Lock waiting for a key held on a quorum
// but free on one node makes a bounded number of attempts (its backoff),
// rather than one per round trip; and it takes the key once the holder
// releases it.
func TestWaitingLockDoesNotSpin(t *testing.T) {
	c := startCluster(t, 3)
	holder, err := c.client().NewMutex("k", mutex.WithTTL(5*time.Second)).Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// A late grant would come back after the delete.
	c.heldEverywhere(t, "k")
	if err := c.delete("k", 2); err != nil { // as if node 2 had restarted empty
		t.Fatal(err)
	}
	if _, err := c.do(2, "CONFIG", "RESETSTAT"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	got := make(chan error, 1)
	waiter := c.client()
	go func() {
		l, err := waiter.NewMutex("k", mutex.WithTTL(5*time.Second)).Lock(ctx)
		if err == nil {
			err = l.Unlock(ctx)
		}
		got <- err
	}()
	time.Sleep(time.Second)
	attempts := c.calls(t, 2, "evalsha")
	// The backoff while watching doubles from 2 ms up to 1 s: about ten
	// attempts in the first second. A spinning waiter makes thousands.
	t.Logf("attempts of a waiting Lock in 1s: %d", attempts)
	if attempts > 25 {
		t.Errorf("a waiting Lock made %d attempts in 1s; want its backoff's dozen at most", attempts)
	}
	if err := holder.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Lock after the release: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting Lock did not take the key within 10s of its release")
	}
}

// calls returns how many times server i ran cmd since its stats were reset.
func (c *cluster) calls(t testing.TB, i int, cmd string) int {
	t.Helper()
	info, err := redis.String(c.do(i, "INFO", "commandstats"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest+",", ',')])
			return n
		}
	}
	return 0
}

// TestReleaseSkipsAnEmptyQueue: a Lock's release with nobody queued costs
// the server a delete and a look at the queue (EXISTS), as a TryLock's
// does: its grant took its owner out of the queue, so the release sends
// no member to take out (ZREM), and the queue's Lua does not run (no
// ZRANGE beyond the grant's own look at the queue).
func TestReleaseSkipsAnEmptyQueue(t *testing.T) {
	c := startCluster(t, 1)
	c.opts = []redlock.Option{redlock.WithoutListQueue()}
	if c.servers[0].External() {
		t.Skip("counts the server's commands: needs a server of its own, not MUTEXKIT_REDIS_ADDRS's")
	}
	cl := c.client()
	for _, lock := range []func(*mutex.Mutex) (*mutex.Lease, error){
		func(m *mutex.Mutex) (*mutex.Lease, error) { return m.Lock(t.Context()) },
		func(m *mutex.Mutex) (*mutex.Lease, error) { return m.TryLock(t.Context()) },
	} {
		lease, err := lock(cl.NewMutex("k"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.do(0, "CONFIG", "RESETSTAT"); err != nil {
			t.Fatal(err)
		}
		if err := lease.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
		if zrem, zrange, exists := c.calls(t, 0, "zrem"), c.calls(t, 0, "zrange"), c.calls(t, 0, "exists"); zrem+zrange != 0 || exists != 1 {
			t.Errorf("the release ran ZREM %d, ZRANGE %d, EXISTS %d times; want 0, 0, 1", zrem, zrange, exists)
		}
	}
}
