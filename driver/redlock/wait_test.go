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
	"github.com/mutexkit/mutexkit/mutex"
)

// watched subscribes wake to key's releases on l and returns once every
// node confirmed the subscription, with wake drained.
func (c *cluster) watched(t *testing.T, l driver.Locker, key string, wake chan struct{}) {
	t.Helper()
	stop, err := l.Watch(key, driver.NewOwner(), wake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for i := range c.servers {
		for {
			v, err := redis.Values(c.do(i, "PUBSUB", "NUMSUB", c.lockKey(key)))
			if err == nil && len(v) == 2 && v[1] == int64(1) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: no subscription within 10s: %v %v", i, v, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(50 * time.Millisecond) // the last confirmation's wake-up
	select {
	case <-wake:
	default:
	}
}

// TestWithdrawWakesNoWaiter: an attempt that fails while one owner holds
// the key on a quorum takes back its partial grants without waking
// waiters (a waiting Lock would be woken by its own failed attempt, and
// try again at once, in a loop); an attempt that fails on a key split
// between owners wakes them, since the key may now be free.
func TestWithdrawWakesNoWaiter(t *testing.T) {
	t.Run("held", func(t *testing.T) {
		c := startCluster(t, 3)
		holder := driver.NewOwner()
		c.plant(t, "k", holder, 0, 1) // node 2 free: restarted empty, or down at the grant
		l := c.locker()
		wake := make(chan struct{}, 1)
		c.watched(t, l, "k", wake)
		for range 3 {
			if _, err := acquire(t, l, "k", driver.NewOwner()); !errors.Is(err, driver.ErrLocked) {
				t.Fatalf("Acquire: %v; want ErrLocked", err)
			}
		}
		if got := c.owner(2, "k"); got != "" {
			t.Fatalf("node 2 keeps the failed attempt's grant %s", got)
		}
		select {
		case <-wake:
			t.Fatal("a failed attempt's withdrawal woke the waiters")
		case <-time.After(300 * time.Millisecond):
		}
	})
	t.Run("split", func(t *testing.T) {
		c := startCluster(t, 5)
		c.plant(t, "k", driver.NewOwner(), 0, 1)
		c.plant(t, "k", driver.NewOwner(), 2)
		l := c.locker()
		wake := make(chan struct{}, 1)
		c.watched(t, l, "k", wake)
		if _, err := acquire(t, l, "k", driver.NewOwner()); !errors.Is(err, driver.ErrLocked) {
			t.Fatalf("Acquire: %v; want ErrLocked", err)
		}
		select {
		case <-wake:
		case <-time.After(10 * time.Second):
			t.Fatal("a failed attempt on a split key woke no waiter")
		}
	})
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
	attempts := c.calls(t, 2, "set")
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
func (c *cluster) calls(t *testing.T, i int, cmd string) int {
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
