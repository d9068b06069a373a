package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/mutex"
)

// This file tests package mutex's side of the wait queue: what it asks of
// a driver (driver.AcquireRequest.Wait, Watch per owner, Release when a
// waiter gives up), and the queue of Mutex values inside one client.

// recorder records the acquire attempts and releases a client makes.
type recorder struct {
	driver.Locker
	mu       sync.Mutex
	attempts []driver.AcquireRequest
	released []driver.Owner
	watched  []driver.Owner
}

func (r *recorder) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	r.mu.Lock()
	r.attempts = append(r.attempts, req)
	r.mu.Unlock()
	return r.Locker.Acquire(ctx, req)
}

func (r *recorder) Release(ctx context.Context, key string, owner driver.Owner) error {
	r.mu.Lock()
	r.released = append(r.released, owner)
	r.mu.Unlock()
	return r.Locker.Release(ctx, key, owner)
}

func (r *recorder) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	r.mu.Lock()
	r.watched = append(r.watched, owner)
	r.mu.Unlock()
	return r.Locker.Watch(key, owner, wake)
}

func recordingClient(t *testing.T, table *mem.Table) (*mutex.Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { rec.Locker = next; return rec },
	}))
	t.Cleanup(func() { c.Close() })
	return c, rec
}

// TestWaitAsksForAQueue: Lock's attempts set Wait, all with one owner,
// which it watches; TryLock's attempt does not.
func TestWaitAsksForAQueue(t *testing.T) {
	ctx := context.Background()
	table := mem.NewTable()
	holder := mutex.NewClient(mem.FromTable(table))
	defer holder.Close()
	held, err := holder.NewMutex("k").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, rec := recordingClient(t, table)
	if _, err := c.NewMutex("k").TryLock(ctx); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock = %v; want ErrLocked", err)
	}
	go func() { // release once the Lock watches: it found the key held
		waitFor(func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.watched) > 0 })
		held.Unlock(ctx)
	}()
	lease, err := c.NewMutex("k").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Unlock(ctx)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.attempts) < 3 {
		t.Fatalf("%d attempts; want TryLock's and at least two of Lock's", len(rec.attempts))
	}
	if rec.attempts[0].Wait {
		t.Error("TryLock's attempt has Wait set")
	}
	owner := rec.attempts[1].Owner
	for i, a := range rec.attempts[1:] {
		if !a.Wait || a.Owner != owner {
			t.Errorf("Lock's attempt %d: Wait %v, same owner as the first %v; want both", i+1, a.Wait, a.Owner == owner)
		}
	}
	if !slices.Equal(rec.watched, []driver.Owner{owner}) {
		t.Errorf("watched %d owners; want Lock's owner, once", len(rec.watched))
	}
}

// TestWaiterGivingUpLeavesTheQueue: a Lock whose ctx ends after the key
// was found held calls Release with its owner, which takes it out of the
// key's queue, so the waiters behind it are not kept waiting for it.
func TestWaiterGivingUpLeavesTheQueue(t *testing.T) {
	ctx := context.Background()
	table := mem.NewTable()
	holder := mutex.NewClient(mem.FromTable(table))
	defer holder.Close()
	held, err := holder.NewMutex("k").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock(ctx)
	c, rec := recordingClient(t, table)
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.NewMutex("k").Lock(wctx); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("Lock = %v; want ErrLocked when its ctx ends", err)
	}
	c.Close() // waits for the background release
	rec.mu.Lock()
	defer rec.mu.Unlock()
	owner := rec.attempts[0].Owner
	if !slices.Contains(rec.released, owner) {
		t.Fatal("the waiter that gave up made no Release: it keeps its place in the queue until QueueHold")
	}
}

// TestWaitersInAClientTakeTurns: Mutex values of one client waiting for a
// key take it in the order they asked, and one whose wait ends lets the
// next one have it.
func TestWaitersInAClientTakeTurns(t *testing.T) {
	ctx := context.Background()
	c := mutex.NewClient(mem.FromTable(mem.NewTable()))
	defer c.Close()
	held, err := c.NewMutex("k").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 6
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	cancels := make([]context.CancelFunc, waiters)
	for i := range waiters {
		wctx, cancel := context.WithCancel(ctx)
		cancels[i] = cancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			lease, err := c.NewMutex("k").Lock(wctx)
			if err != nil {
				if i != 2 {
					t.Errorf("waiter %d: %v", i, err)
				}
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			lease.Unlock(ctx)
		}()
		waitFor(func() bool { return mutex.QueuedInClient(c, "k") == i+1 })
	}
	cancels[2]() // waiter 2 gives up in the middle of the queue
	waitFor(func() bool { return mutex.QueuedInClient(c, "k") == waiters-1 })
	held.Unlock(ctx)
	wg.Wait()
	for _, cancel := range cancels {
		cancel()
	}
	if want := []int{0, 1, 3, 4, 5}; !slices.Equal(order, want) {
		t.Fatalf("waiters took the key in the order %v; want %v", order, want)
	}
}

// queuedOnly fails the first attempts with ErrUnavailable, and, as a
// driver that sees releases only through its queue may, refuses to Watch an
// owner it has not queued (one whose attempt did not find the key held).
type queuedOnly struct {
	driver.Locker
	failures *atomic.Int32
	mu       *sync.Mutex
	queued   map[driver.Owner]bool
	watches  *[]bool // per Watch call: whether the owner was queued
}

func (l queuedOnly) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	if l.failures.Add(-1) >= 0 {
		return driver.Grant{}, fmt.Errorf("read: connection reset: %w", driver.ErrUnavailable)
	}
	g, err := l.Locker.Acquire(ctx, req)
	if errors.Is(err, driver.ErrLocked) {
		l.mu.Lock()
		l.queued[req.Owner] = true
		l.mu.Unlock()
	}
	return g, err
}

func (l queuedOnly) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	l.mu.Lock()
	queued := l.queued[owner]
	*l.watches = append(*l.watches, queued)
	l.mu.Unlock()
	if !queued {
		return nil, fmt.Errorf("owner not queued: %w", driver.ErrUnimplemented)
	}
	return l.Locker.Watch(key, owner, wake)
}

// TestWatchOnceQueued: a Lock whose first attempt met an outage watches
// only once an attempt found the key held, so a driver that watches queued
// owners alone still wakes it, rather than leaving it to poll.
func TestWatchOnceQueued(t *testing.T) {
	ctx := context.Background()
	table := mem.NewTable()
	holder := mutex.NewClient(mem.FromTable(table))
	defer holder.Close()
	held, err := holder.NewMutex("k").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var (
		failures atomic.Int32
		mu       sync.Mutex
		watches  []bool
	)
	failures.Store(1)
	c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
			return queuedOnly{next, &failures, &mu, map[driver.Owner]bool{}, &watches}
		},
	}))
	defer c.Close()
	go func() { // release once the Lock is queued and watches
		waitFor(func() bool { mu.Lock(); defer mu.Unlock(); return slices.Contains(watches, true) })
		held.Unlock(ctx)
	}()
	lease, err := c.NewMutex("k").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lease.Unlock(ctx)
	mu.Lock()
	defer mu.Unlock()
	if len(watches) == 0 || !watches[0] {
		t.Fatalf("Watch calls, each with whether the owner was queued: %v; want the first after the key was found held", watches)
	}
}

// TestWaiterHandedKeyAsItsWaitEnds: a waiter inside a client whose ctx
// ends just as the key is handed to it passes the key on: the client is
// never left with a key nobody holds.
func TestWaiterHandedKeyAsItsWaitEnds(t *testing.T) {
	ctx := context.Background()
	c := mutex.NewClient(mem.FromTable(mem.NewTable()))
	defer c.Close()
	for round := range 300 {
		held, err := c.NewMutex("k").TryLock(ctx)
		if err != nil {
			t.Fatalf("round %d: the key was left taken: %v", round, err)
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			lease, err := c.NewMutex("k").Lock(wctx)
			if err == nil {
				err = lease.Unlock(ctx)
			}
			done <- err
		}()
		for mutex.QueuedInClient(c, "k") != 1 {
			time.Sleep(50 * time.Microsecond)
		}
		cancel()
		held.Unlock(ctx)
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: waiter: %v", round, err)
		}
	}
}

// TestCloseWithWaitersInClient: Close while Mutex values wait inside the
// client, racing an Unlock, ends every wait with ErrClosed or a lease, and
// hands nothing on after it began.
func TestCloseWithWaitersInClient(t *testing.T) {
	ctx := context.Background()
	c := mutex.NewClient(mem.FromTable(mem.NewTable()))
	held, err := c.NewMutex("k").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 5
	errs := make(chan error, waiters)
	for range waiters {
		go func() {
			_, err := c.NewMutex("k").Lock(ctx)
			errs <- err
		}()
	}
	waitFor(func() bool { return mutex.QueuedInClient(c, "k") == waiters })
	go held.Unlock(ctx)
	c.Close()
	for range waiters {
		select {
		case err := <-errs:
			if err != nil && !errors.Is(err, mutex.ErrClosed) {
				t.Errorf("waiter: %v; want ErrClosed or a lease", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a waiter inside the client did not return after Close")
		}
	}
}

// waitFor returns once cond holds, checking it every millisecond; the
// test's own timeout bounds it.
func waitFor(cond func() bool) {
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}
