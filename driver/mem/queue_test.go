package mem_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
)

// queueFixture is a table on a hand-moved clock, and helpers for attempts.
type queueFixture struct {
	t     *testing.T
	ctx   context.Context
	clock *fakeClock
	table *mem.Table
}

func newQueueFixture(t *testing.T) *queueFixture {
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	return &queueFixture{t: t, ctx: context.Background(), clock: clock, table: mem.NewTable(mem.WithClock(clock.Now))}
}

// locker is a new client of the table, as another pod would be.
func (q *queueFixture) locker() driver.Locker {
	l, err := mem.FromTable(q.table).Connect(q.ctx)
	if err != nil {
		q.t.Fatal(err)
	}
	q.t.Cleanup(func() { l.Close() })
	return l
}

func (q *queueFixture) try(l driver.Locker, owner driver.Owner, wait bool) error {
	_, err := l.Acquire(q.ctx, driver.AcquireRequest{Key: "k", Owner: owner, TTL: time.Minute, Wait: wait})
	return err
}

func (q *queueFixture) mustGet(l driver.Locker, owner driver.Owner, who string) {
	q.t.Helper()
	if err := q.try(l, owner, true); err != nil {
		q.t.Fatalf("%s: %v; want the key", who, err)
	}
}

func (q *queueFixture) mustWait(l driver.Locker, owner driver.Owner, wait bool, who string) {
	q.t.Helper()
	if err := q.try(l, owner, wait); !errors.Is(err, driver.ErrLocked) {
		q.t.Fatalf("%s: %v; want ErrLocked", who, err)
	}
}

// watch registers a watch of owner's turn, stopped when the test ends.
func (q *queueFixture) watch(l driver.Locker, owner driver.Owner) chan struct{} {
	wake := make(chan struct{}, 1)
	stop, err := l.Watch("k", owner, wake)
	if err != nil {
		q.t.Fatal(err)
	}
	q.t.Cleanup(stop)
	return wake
}

func woken(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// TestQueueKeepsKeyForHead: a release keeps the key for the oldest waiter;
// anyone else, waiting or not, is refused until it takes it; then the next
// waiter's turn comes.
func TestQueueKeepsKeyForHead(t *testing.T) {
	q := newQueueFixture(t)
	h, a, b, c := q.locker(), q.locker(), q.locker(), q.locker()
	ho, ao, bo := driver.NewOwner(), driver.NewOwner(), driver.NewOwner()
	q.mustGet(h, ho, "holder")
	q.mustWait(a, ao, true, "first waiter")
	q.mustWait(b, bo, true, "second waiter")
	if err := h.Release(q.ctx, "k", ho); err != nil {
		t.Fatal(err)
	}
	q.mustWait(b, bo, true, "second waiter, key kept for the first")
	q.mustWait(c, driver.NewOwner(), false, "TryLock of a kept key")
	q.mustWait(c, driver.NewOwner(), true, "newcomer on a kept key")
	if _, held := q.table.Holder("k"); held {
		t.Fatal("a kept key reads as held")
	}
	q.mustGet(a, ao, "first waiter")
	if err := a.Release(q.ctx, "k", ao); err != nil {
		t.Fatal(err)
	}
	q.mustGet(b, bo, "second waiter")
}

// TestQueueWakesHeadOnly: one release wakes the head's watch and no other
// waiter's; a watcher that does not queue is woken only when nobody does.
func TestQueueWakesHeadOnly(t *testing.T) {
	q := newQueueFixture(t)
	h, a, b, c := q.locker(), q.locker(), q.locker(), q.locker()
	ho, ao, bo := driver.NewOwner(), driver.NewOwner(), driver.NewOwner()
	q.mustGet(h, ho, "holder")
	q.mustWait(a, ao, true, "first waiter")
	q.mustWait(b, bo, true, "second waiter")
	wa, wb, wc := q.watch(a, ao), q.watch(b, bo), q.watch(c, driver.NewOwner())
	h.Release(q.ctx, "k", ho)
	if !woken(wa) || woken(wb) || woken(wc) {
		t.Fatal("release: want the head's watch woken, and only it")
	}
	q.mustGet(a, ao, "first waiter")
	a.Release(q.ctx, "k", ao)
	if !woken(wb) || woken(wa) || woken(wc) {
		t.Fatal("second release: want the new head's watch woken, and only it")
	}
	q.mustGet(b, bo, "second waiter")
	b.Release(q.ctx, "k", bo)
	if !woken(wc) {
		t.Fatal("release with nobody queued: the watcher was not woken")
	}
}

// TestQueueWaiterLeaves: a waiter that gives up (Release) leaves the queue;
// if the key was kept for it, it passes on at once, waking the next.
func TestQueueWaiterLeaves(t *testing.T) {
	q := newQueueFixture(t)
	h, a, b, c := q.locker(), q.locker(), q.locker(), q.locker()
	ho, ao, bo, co := driver.NewOwner(), driver.NewOwner(), driver.NewOwner(), driver.NewOwner()
	q.mustGet(h, ho, "holder")
	q.mustWait(a, ao, true, "first waiter")
	q.mustWait(b, bo, true, "second waiter")
	q.mustWait(c, co, true, "third waiter")
	wc := q.watch(c, co)
	if err := b.Release(q.ctx, "k", bo); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release by a waiter: %v; want ErrNotHeld", err)
	}
	h.Release(q.ctx, "k", ho) // kept for a
	if err := a.Release(q.ctx, "k", ao); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release by the head: %v; want ErrNotHeld", err)
	}
	if !woken(wc) {
		t.Fatal("the head left a kept key: the next waiter was not woken")
	}
	q.mustWait(b, bo, false, "the waiter that left, trying again")
	q.mustGet(c, co, "third waiter")
}

// TestQueuePlaceRunsOut: a waiter that stops asking keeps its place for
// QueueHold after its last attempt, then it is passed over, and the next
// waiter is woken by the attempt that finds it so.
func TestQueuePlaceRunsOut(t *testing.T) {
	q := newQueueFixture(t)
	h, a, b, c := q.locker(), q.locker(), q.locker(), q.locker()
	ho, ao, bo := driver.NewOwner(), driver.NewOwner(), driver.NewOwner()
	q.mustGet(h, ho, "holder")
	q.mustWait(a, ao, true, "first waiter") // its last attempt
	q.mustWait(b, bo, true, "second waiter")
	wb := q.watch(b, bo)
	h.Release(q.ctx, "k", ho)
	q.clock.Advance(driver.QueueHold - time.Millisecond)
	q.mustWait(b, bo, true, "second waiter within the head's hold")
	q.clock.Advance(time.Millisecond)
	q.mustWait(c, driver.NewOwner(), false, "a TryLock that finds the head gone")
	if !woken(wb) {
		t.Fatal("the dead head was passed over: the next waiter was not woken")
	}
	q.mustGet(b, bo, "second waiter after the head's hold")
	b.Release(q.ctx, "k", bo)
	if err := q.try(a, ao, true); err != nil {
		t.Fatalf("the passed-over waiter coming back to a free key: %v", err)
	}
}

// TestQueueCloseLeaves: a Locker's Close takes its waiters out of every
// queue and passes on a key kept for one.
func TestQueueCloseLeaves(t *testing.T) {
	q := newQueueFixture(t)
	h, a, b := q.locker(), q.locker(), q.locker()
	ho, ao, bo := driver.NewOwner(), driver.NewOwner(), driver.NewOwner()
	q.mustGet(h, ho, "holder")
	q.mustWait(a, ao, true, "first waiter")
	q.mustWait(b, bo, true, "second waiter")
	wb := q.watch(b, bo)
	h.Release(q.ctx, "k", ho)
	a.Close()
	if !woken(wb) {
		t.Fatal("the head's Locker closed: the next waiter was not woken")
	}
	q.mustGet(b, bo, "second waiter")
}

// TestQueueLeaveBehindDeadHead: the key is kept for the first waiter, whose
// place then runs out without any attempt finding it, so it still stands in
// front of the live head, the second waiter. When the second waiter leaves
// (Release, or its Locker's Close), the third is woken at once, not at its
// next poll.
func TestQueueLeaveBehindDeadHead(t *testing.T) {
	for _, how := range []string{"Release", "Close"} {
		t.Run(how, func(t *testing.T) {
			q := newQueueFixture(t)
			h, a, b, c := q.locker(), q.locker(), q.locker(), q.locker()
			ho, ao, bo, co := driver.NewOwner(), driver.NewOwner(), driver.NewOwner(), driver.NewOwner()
			q.mustGet(h, ho, "holder")
			q.mustWait(a, ao, true, "first waiter") // its last attempt
			q.clock.Advance(time.Second)
			q.mustWait(b, bo, true, "second waiter")
			q.mustWait(c, co, true, "third waiter")
			wc := q.watch(c, co)
			h.Release(q.ctx, "k", ho) // kept for the first waiter
			q.clock.Advance(driver.QueueHold - time.Second)
			if how == "Release" {
				if err := b.Release(q.ctx, "k", bo); !errors.Is(err, driver.ErrNotHeld) {
					t.Fatalf("Release by the live head: %v; want ErrNotHeld", err)
				}
			} else {
				b.Close()
			}
			if !woken(wc) {
				t.Fatalf("the live head behind a dead one left (%s): the next waiter was not woken", how)
			}
			q.mustGet(c, co, "third waiter")
		})
	}
}

// TestCloseEndsWatches: a Locker's Close ends the watches registered
// through it, stopped or not: a later release wakes none of them.
func TestCloseEndsWatches(t *testing.T) {
	q := newQueueFixture(t)
	h, a, b := q.locker(), q.locker(), q.locker()
	ho, ao := driver.NewOwner(), driver.NewOwner()
	q.mustGet(h, ho, "holder")
	q.mustWait(a, ao, true, "waiter")
	wa, wb := q.watch(a, ao), q.watch(b, driver.NewOwner())
	a.Close()
	h.Release(q.ctx, "k", ho)
	if woken(wa) {
		t.Fatal("a watch registered through a closed Locker was woken")
	}
	if !woken(wb) {
		t.Fatal("a release with nobody queued: the open Locker's watcher was not woken")
	}
}

// TestQueueRestartEmpty: RestartEmpty loses grants and queues; the holder
// finds its loss by renewing, the waiters find the key free.
func TestQueueRestartEmpty(t *testing.T) {
	q := newQueueFixture(t)
	h, a, b := q.locker(), q.locker(), q.locker()
	ho, ao, bo := driver.NewOwner(), driver.NewOwner(), driver.NewOwner()
	q.mustGet(h, ho, "holder")
	q.mustWait(a, ao, true, "first waiter")
	q.table.RestartEmpty()
	batch := []driver.Renewal{{Key: "k", Owner: ho, TTL: time.Minute}}
	h.Renew(q.ctx, batch)
	if !errors.Is(batch[0].Err, driver.ErrNotHeld) {
		t.Fatalf("Renew after the restart: %v; want ErrNotHeld", batch[0].Err)
	}
	q.mustGet(b, bo, "a waiter the restart forgot")
	q.mustWait(a, ao, true, "first waiter, queued again")
}

// TestQueueConcurrent: waiters on several Lockers, each asking as package
// mutex does (attempt, watch, attempt, wait for a wake or a poll), take one
// key in turn: never two holders, and every one served. Run it with -race.
func TestQueueConcurrent(t *testing.T) {
	ctx := context.Background()
	table := mem.NewTable()
	const lockers, rounds = 8, 50
	var (
		counter atomic.Int64 // read, yield, write: two holders at once lose updates
		wg      sync.WaitGroup
	)
	errs := make(chan error, lockers)
	for range lockers {
		l, _ := mem.FromTable(table).Connect(ctx)
		defer l.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				owner := driver.NewOwner()
				wake := make(chan struct{}, 1)
				var stop func()
				for {
					_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: owner, TTL: time.Minute, Wait: true})
					if err == nil {
						break
					}
					if stop == nil {
						stop, _ = l.Watch("k", owner, wake)
						continue
					}
					select {
					case <-wake:
					case <-time.After(time.Second):
					}
				}
				if stop != nil {
					stop()
				}
				v := counter.Load()
				runtime.Gosched()
				counter.Store(v + 1)
				if err := l.Release(ctx, "k", owner); err != nil {
					errs <- err
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("waiters not all served within a minute")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := counter.Load(); got != lockers*rounds {
		t.Errorf("counter = %d after %d critical sections: two holders at once lost updates", got, lockers*rounds)
	}
}
