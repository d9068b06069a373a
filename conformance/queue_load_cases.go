package conformance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// The Queue/ cases that run through package mutex: they hold for every
// driver, with a wait queue or without.

func needsRestarter(h Harness, _ Capabilities) (bool, string) {
	_, ok := h.(Restarter)
	return ok, "the harness cannot restart its backend empty (it does not implement conformance.Restarter)"
}

// restartServeWithin bounds how soon after the restart every waiter has
// been served.
func (f *fixture) restartServeWithin() time.Duration {
	return f.caps.LossWithin + 2*driver.QueueHold
}

// testQueueRestartEmpty: waiters queue behind a holder, and the backend
// restarts empty. Every waiter is then served, one at a time. The first
// served holds the key until the holder whose grant the restart took has
// called Unlock: that Unlock must say the lease was lost (mutex.ErrLockLost)
// and must leave the key held.
func testQueueRestartEmpty(f *fixture) {
	const key, waiters = "queue-restart", 3
	hold := f.lock(f.client(), key)
	var (
		s       section
		wg      sync.WaitGroup
		first   = make(chan struct{})
		firstIn atomic.Bool
		checked = make(chan struct{}) // the first served leaves its section after it
		pending atomic.Int64
	)
	pending.Store(waiters)
	errs := make(chan error, waiters)
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	release := sync.OnceFunc(func() { close(checked) })
	defer release()
	for range waiters {
		c := f.client()
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := c.NewMutex(key, mutex.WithTTL(suiteTTL)).Lock(ctx)
			if err != nil {
				errs <- err
				return
			}
			isFirst := firstIn.CompareAndSwap(false, true)
			if isFirst {
				close(first)
				select {
				case <-checked:
				case <-ctx.Done():
				}
			}
			s.run(100 * time.Millisecond)
			pending.Add(-1)
			err = l.Unlock(f.ctx)
			switch {
			case err != nil && isFirst:
				errs <- fmt.Errorf("first waiter served, its Unlock after the lost holder's (which must not free the key): %w", err)
			case err != nil:
				errs <- err
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // let them queue; correctness does not depend on it
	if err := f.h.(Restarter).RestartEmpty(f.ctx); err != nil {
		f.Fatalf("RestartEmpty: %v", err)
	}
	restarted := time.Now()
	select { // the holder learns of its loss, or a waiter takes the key first
	case <-first:
	case <-hold.Done():
	case <-time.After(f.caps.LossWithin):
		f.Errorf("after RestartEmpty, the holder's lease was not reported lost within LossWithin (%v), nor was its key taken", f.caps.LossWithin)
	}
	select {
	case <-first:
	case <-time.After(f.restartServeWithin() - time.Since(restarted)):
		f.Fatalf("no waiter served within %v of the restart", f.restartServeWithin())
	}
	if err := hold.Unlock(f.ctx); !errors.Is(err, mutex.ErrLockLost) {
		f.Errorf("Unlock of the lease the restart took, a waiter holding the key: %v; want an error matching mutex.ErrLockLost: the critical sections may have overlapped", err)
	}
	release()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(f.restartServeWithin()):
		cancel()
		<-done
		f.Errorf("%d of %d waiters not served within %v of the restart", pending.Load(), waiters, f.restartServeWithin())
	}
	f.Logf("every waiter served %v after the restart", time.Since(restarted).Round(time.Millisecond))
	close(errs)
	for err := range errs {
		if pending.Load() == 0 || !errors.Is(err, context.Canceled) {
			f.Errorf("waiter: %v", err)
		}
	}
	s.check(f, waiters-pending.Load())
}

// Contention: clients x goroutines on one key, until each goroutine has held
// it contentionEach times. Goroutines go on asking until every one has, so
// that one left behind shows: as a wait that contentionPassedOver grants to
// others did not end, or as a timeout. A driver without a queue promises no
// order: there the case checks exclusion over contentionTotal*contentionEach
// grants, whoever takes them.
const (
	contentionClients    = 3
	contentionGoroutines = 50
	contentionTotal      = contentionClients * contentionGoroutines
	contentionEach       = 3
	contentionWithin     = 60 * time.Second

	// contentionPassedOver is how many grants to others one Lock call may
	// wait out: ten times what the goroutines' turns take in arrival order
	// (each client's goroutines take the key in turn, and each client's
	// turn comes after the others').
	contentionPassedOver = 10 * contentionTotal
)

// contention is the state of testQueueContention.
type contention struct {
	queued  bool // the driver declares a queue: starvation fails the case
	s       section
	granted atomic.Int64 // grants so far
	behind  atomic.Int64 // goroutines short of contentionEach grants

	grants     [contentionTotal]atomic.Int64 // per goroutine
	since      [contentionTotal]atomic.Int64 // granted when its Lock call began; -1: not waiting
	mostPassed atomic.Int64                  // grants to others a Lock call waited out, at most
}

// passedOver notes that a waiter was passed over n times.
func (c *contention) passedOver(n int64) {
	for {
		m := c.mostPassed.Load()
		if n <= m || c.mostPassed.CompareAndSwap(m, n) {
			return
		}
	}
}

// goroutine is goroutine i's loop: take the key, count, release, until no
// goroutine is behind. An error ends every goroutine's loop (fail), as the
// others would wait for this one in vain.
func (c *contention) goroutine(ctx context.Context, m *mutex.Mutex, i int, fail func(error)) {
	for c.behind.Load() > 0 && (c.queued || c.granted.Load() < contentionTotal*contentionEach) {
		c.since[i].Store(c.granted.Load())
		l, err := m.Lock(ctx)
		if err != nil {
			if ctx.Err() == nil {
				fail(err)
			}
			return
		}
		c.passedOver(c.granted.Add(1) - 1 - c.since[i].Swap(-1))
		c.s.run(0)
		if c.grants[i].Add(1) == contentionEach {
			c.behind.Add(-1)
		}
		if err := l.Unlock(context.WithoutCancel(ctx)); err != nil {
			fail(err)
			return
		}
	}
}

// watch ends ctx (cancel) once a waiter has been passed over more than
// contentionPassedOver times, and returns when ctx ends.
func (c *contention) watch(ctx context.Context, cancel context.CancelFunc) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := c.granted.Load()
		for i := range c.since {
			if s := c.since[i].Load(); s >= 0 {
				c.passedOver(now - s)
			}
		}
		if c.queued && c.mostPassed.Load() > contentionPassedOver {
			cancel()
		}
	}
}

// testQueueContention: three clients of fifty goroutines each contend for
// one key through package mutex: never two holders, and no goroutine
// starves.
func testQueueContention(f *fixture) {
	const key = "queue-contention"
	c := &contention{queued: f.caps.Queue}
	c.behind.Store(contentionTotal)
	for i := range c.since {
		c.since[i].Store(-1)
	}
	ctx, cancel := context.WithTimeout(f.ctx, contentionWithin)
	defer cancel()
	errs := make(chan error, contentionTotal)
	var wg sync.WaitGroup
	start := make(chan struct{}) // all at once: the first started must not run ahead
	for ci := range contentionClients {
		client := f.client()
		for gi := range contentionGoroutines {
			wg.Go(func() {
				m := client.NewMutex(key, mutex.WithTTL(suiteTTL))
				<-start
				c.goroutine(ctx, m, ci*contentionGoroutines+gi, func(err error) {
					errs <- err
					cancel()
				})
			})
		}
	}
	started := time.Now()
	close(start)
	watched := make(chan struct{})
	go func() { c.watch(ctx, cancel); close(watched) }()
	wg.Wait()
	cancel()
	<-watched
	close(errs)
	failed := len(errs) > 0
	for err := range errs {
		f.Errorf("Lock/Unlock: %v", err)
	}
	counts := make([]int64, contentionTotal)
	for i := range c.grants {
		counts[i] = c.grants[i].Load()
	}
	c.s.check(f, c.granted.Load())
	summary := fmt.Sprintf("%d grants in %v; per goroutine %d to %d; a Lock waited out at most %d grants to others",
		c.granted.Load(), time.Since(started).Round(time.Millisecond), slices.Min(counts), slices.Max(counts), c.mostPassed.Load())
	switch n := c.behind.Load(); {
	case !c.queued:
		// Without a queue nothing promises an order: only exclusion (above)
		// is checked, over as many grants as the goroutines would have
		// taken in turn.
		f.Log(summary)
	case n > 0 && c.mostPassed.Load() > contentionPassedOver:
		f.Errorf("starved: a waiter was passed over more than %d times; %d of %d goroutines had held the key fewer than %d times (%s)", contentionPassedOver, n, contentionTotal, contentionEach, summary)
	case n > 0 && !failed:
		f.Errorf("after %v, %d of %d goroutines had held the key fewer than %d times (%s)", contentionWithin, n, contentionTotal, contentionEach, summary)
	default:
		f.Log(summary)
	}
}
