package conformance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mutexkit/mutexkit/mutex"
)

// cases is the suite, in the order it runs.
var cases = []testCase{
	{name: "Exclusion", run: testExclusion},
	{name: "TryLockHeld", run: testTryLockHeld},
	{name: "LockWaitsForRelease", run: testLockWaits},
	{name: "LockCancel", run: testLockCancel},
	{name: "LockDeadline", run: testLockDeadline},
	{name: "DoubleUnlock", run: testDoubleUnlock},
	{name: "LossReported", run: testLossReported},
	{name: "StaleUnlock", run: testStaleUnlock},
	{name: "AbandonedLockFrees", run: testAbandoned},
	{name: "RenewalKeepsLease", run: testRenewalKeepsLease},
	{name: "FencingTokens", run: testFencing},
	{name: "KeysIndependent", run: testKeysIndependent},
	{name: "ThousandKeys", run: testThousandKeys},
	{name: "OddKeys", run: testOddKeys},
	{name: "Do", run: testDo},
	{name: "MinHold", run: testMinHold},
	{name: "Inspect", run: testInspect},
	{name: "Close", run: testClose},
	{name: "NoGoroutineAfterClose", run: testNoGoroutineAfterClose},
	{name: "Driver/ReleaseNeedsOwner", run: testDriverReleaseNeedsOwner},
	{name: "Driver/RetrySameOwner", run: testDriverRetrySameOwner},
	{name: "Driver/RenewNeedsOwner", run: testDriverRenewNeedsOwner},
	{name: "Driver/RenewFindsLoss", run: testDriverRenewFindsLoss},
	{name: "Driver/CloseReleases", run: testDriverCloseReleases},
	{name: "Driver/AfterClose", run: testDriverAfterClose},
	{name: "Driver/Watch", run: testDriverWatch},
	{name: "Queue/FIFO", needs: needsQueue, run: testQueueFIFO},
	{name: "Queue/CancelMidQueue", needs: needsQueue, run: testQueueCancelMidQueue},
	{name: "Queue/HeadKilled", needs: needsQueue, run: testQueueHeadKilled},
	{name: "Queue/OneWake", needs: needsQueue, run: testQueueOneWake},
	{name: "Queue/RestartEmpty", needs: needsRestarter, run: testQueueRestartEmpty},
	{name: "Queue/Contention", run: testQueueContention},
}

func isLocked(err error) bool { return errors.Is(err, mutex.ErrLocked) }

// testExclusion: many goroutines on several clients take one key in turn.
// A gauge of holders must never pass 1, and a counter updated by
// read-yield-write must lose no update.
func testExclusion(f *fixture) {
	const clients, perClient, rounds = 3, 3, 25
	var (
		s  section
		wg sync.WaitGroup
	)
	errs := make(chan error, clients*perClient)
	for range clients {
		c := f.client()
		for range perClient {
			wg.Go(func() {
				m := c.NewMutex("exclusion", mutex.WithTTL(suiteTTL))
				for range rounds {
					l, err := m.Lock(f.ctx)
					if err != nil {
						errs <- err
						return
					}
					s.run(0)
					if err := l.Unlock(f.ctx); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		f.Errorf("Lock/Unlock: %v", err)
	}
	s.check(f, clients*perClient*rounds)
}

func testTryLockHeld(f *fixture) {
	a, b := f.client(), f.client()
	l := f.lock(a, "held")
	f.mustBeLocked(b, "held", "another client holds it")
	f.unlock(l)
	l2, err := f.tryLock(b, "held")
	if err != nil {
		f.Fatalf("TryLock after Unlock: %v", err)
	}
	f.unlock(l2)
}

func testLockWaits(f *fixture) {
	a, b := f.client(), f.client()
	l := f.lock(a, "wait")
	var released atomic.Bool
	got := make(chan error, 1)
	go func() {
		l2, err := b.NewMutex("wait", mutex.WithTTL(suiteTTL)).Lock(f.ctx)
		if err == nil {
			if !released.Load() {
				err = errors.New("lock returned before the holder unlocked")
			}
			l2.Unlock(f.ctx)
		}
		got <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the waiter start waiting; correctness does not depend on it
	released.Store(true)
	f.unlock(l)
	if err := <-got; err != nil {
		f.Fatalf("waiting Lock: %v", err)
	}
}

// lockCancelled checks that a Lock ended by its context returns the
// context's error and leaves nothing acquired behind.
func lockCancelled(f *fixture, ctx context.Context, want error) {
	a, b := f.client(), f.client()
	l := f.lock(a, "cancel")
	_, err := b.NewMutex("cancel", mutex.WithTTL(suiteTTL)).Lock(ctx)
	if !errors.Is(err, want) {
		f.Fatalf("Lock with ending context: %v; want an error matching %v", err, want)
	}
	f.unlock(l)
	// The cancelled waiter must have left nothing held: a third client gets it.
	ctx3, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	l3, err := f.client().NewMutex("cancel", mutex.WithTTL(suiteTTL)).Lock(ctx3)
	if err != nil {
		f.Fatalf("Lock after the cancelled waiter: %v (did it leave a grant behind?)", err)
	}
	f.unlock(l3)
}

func testLockCancel(f *fixture) {
	ctx, cancel := context.WithCancel(f.ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	lockCancelled(f, ctx, context.Canceled)
}

func testLockDeadline(f *fixture) {
	ctx, cancel := context.WithTimeout(f.ctx, 100*time.Millisecond)
	defer cancel()
	lockCancelled(f, ctx, context.DeadlineExceeded)
}

func testDoubleUnlock(f *fixture) {
	l := f.lock(f.client(), "double")
	f.unlock(l)
	err := l.Unlock(f.ctx)
	if !errors.Is(err, mutex.ErrNotHeld) || errors.Is(err, mutex.ErrLockLost) {
		f.Fatalf("second Unlock: %v; want ErrNotHeld and not ErrLockLost", err)
	}
	if l.Err() != nil {
		f.Fatalf("Err after a clean Unlock: %v; want nil", l.Err())
	}
	select {
	case <-l.Done():
	default:
		f.Fatal("Done not closed after Unlock")
	}
}

// testLossReported: a grant that vanishes on the backend is reported lost,
// through Done, Err and the context of Do.
func testLossReported(f *fixture) {
	c := f.client()
	cause := make(chan error, 1)
	err := c.NewMutex("loss", mutex.WithTTL(suiteTTL)).Do(f.ctx, func(ctx context.Context) error {
		if err := f.h.Vanish(f.ctx, "loss"); err != nil {
			return fmt.Errorf("harness Vanish: %w", err)
		}
		select {
		case <-ctx.Done():
			cause <- context.Cause(ctx)
		case <-time.After(f.caps.LossWithin):
			cause <- fmt.Errorf("loss not reported within %v", f.caps.LossWithin)
		}
		return nil
	})
	if got := <-cause; !errors.Is(got, mutex.ErrLockLost) {
		f.Fatalf("Do's context cause: %v; want ErrLockLost", got)
	}
	if !errors.Is(err, mutex.ErrLockLost) {
		f.Fatalf("Do: %v; want an error matching ErrLockLost", err)
	}

	l := f.lock(c, "loss2")
	if err := f.h.Vanish(f.ctx, "loss2"); err != nil {
		f.Fatalf("Vanish: %v", err)
	}
	f.waitDone(l, f.caps.LossWithin, "vanished lease")
	if !errors.Is(l.Err(), mutex.ErrLockLost) {
		f.Fatalf("Err of a vanished lease: %v; want ErrLockLost", l.Err())
	}
	err = l.Unlock(f.ctx)
	if !errors.Is(err, mutex.ErrLockLost) || !errors.Is(err, mutex.ErrNotHeld) {
		f.Fatalf("Unlock of a lost lease: %v; want ErrLockLost and ErrNotHeld", err)
	}
}

// testStaleUnlock: the Unlock of a lease that vanished must not free the
// lock its key's next holder took.
func testStaleUnlock(f *fixture) {
	a, b, c := f.client(), f.client(), f.client()
	stale := f.lock(a, "stale")
	if err := f.h.Vanish(f.ctx, "stale"); err != nil {
		f.Fatalf("Vanish: %v", err)
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.caps.FreeWithin)
	defer cancel()
	fresh, err := b.NewMutex("stale", mutex.WithTTL(suiteTTL)).Lock(ctx)
	if err != nil {
		f.Fatalf("Lock after Vanish: %v", err)
	}
	err = stale.Unlock(f.ctx) // may reach the backend before a renewal finds the loss
	if !errors.Is(err, mutex.ErrLockLost) || !errors.Is(err, mutex.ErrNotHeld) {
		f.Errorf("stale Unlock: %v; want ErrLockLost and ErrNotHeld", err)
	}
	f.mustBeLocked(c, "stale", "its new holder has not unlocked: the stale Unlock freed it")
	if fresh.Err() != nil {
		f.Fatalf("new holder's lease: %v", fresh.Err())
	}
	f.unlock(fresh)
}

func testAbandoned(f *fixture) {
	if err := f.h.Abandon(f.ctx, "abandoned"); err != nil {
		f.Fatalf("Abandon: %v", err)
	}
	f.mustBeLocked(f.client(), "abandoned", "Abandon left it held")
	ctx, cancel := context.WithTimeout(f.ctx, f.caps.FreeWithin)
	defer cancel()
	l, err := f.client().NewMutex("abandoned", mutex.WithTTL(suiteTTL)).Lock(ctx)
	if err != nil {
		f.Fatalf("abandoned lock not freed within %v: %v", f.caps.FreeWithin, err)
	}
	f.unlock(l)
}

// testRenewalKeepsLease: a lease held for several TTLs stays held: its
// renewals succeed, or on a session backend its verifications (one a
// second, mutex's default heartbeat) find it held.
func testRenewalKeepsLease(f *fixture) {
	a, b := f.client(), f.client()
	const ttl = time.Second
	l, err := a.NewMutex("renew", mutex.WithTTL(ttl)).Lock(f.ctx)
	if err != nil {
		f.Fatalf("Lock: %v", err)
	}
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		f.mustBeLocked(b, "renew", "its holder keeps renewing it")
		time.Sleep(ttl / 4)
	}
	if l.Err() != nil {
		f.Fatalf("lease after 3 TTLs: %v", l.Err())
	}
	f.unlock(l)
}

func testFencing(f *fixture) {
	a, b := f.client(), f.client()
	if !f.caps.Fencing {
		_, err := f.tryLock(a, "fence", mutex.WithFencing())
		if !errors.Is(err, errors.ErrUnsupported) {
			f.Fatalf("TryLock with WithFencing on a driver that declares no fencing: %v; want errors.ErrUnsupported", err)
		}
		f.Skip("the driver declares no fencing tokens; WithFencing fails clearly")
	}
	var last uint64
	for i := range 100 {
		c := a
		if i%2 == 1 {
			c = b
		}
		l := f.lock(c, "fence", mutex.WithFencing())
		if tok := l.Token(); tok <= last {
			f.Fatalf("acquisition %d: token %d after %d; want strictly increasing", i, tok, last)
		}
		last = l.Token()
		f.unlock(l)
	}
}

func testKeysIndependent(f *fixture) {
	a, b := f.client(), f.client()
	l1 := f.lock(a, "k1")
	l2, err := f.tryLock(b, "k2")
	if err != nil {
		f.Fatalf("TryLock of another key: %v", err)
	}
	f.unlock(l2)
	f.unlock(l1)
}

func testThousandKeys(f *fixture) {
	a, b := f.client(), f.client()
	leases := make([]*mutex.Lease, 0, 1000)
	for i := range 1000 {
		// A long TTL: taking 1,000 keys on a loaded machine may take longer
		// than the suite's usual TTL, and renewal is not what is tested here.
		leases = append(leases, f.lock(a, fmt.Sprintf("many/%d", i), mutex.WithTTL(time.Minute)))
	}
	for _, i := range []int{0, 1, 499, 998, 999} {
		l, err := f.tryLock(b, fmt.Sprintf("many/%d", i))
		if err == nil {
			held := leases[i].Err() == nil // checked after b's grant: both holding is the fault
			l.Unlock(f.ctx)
			f.Fatalf("client b got many/%d while client a holds 1,000 keys (a's lease still held: %v)", i, held)
		}
		if !isLocked(err) {
			f.Fatalf("TryLock(many/%d): %v; want ErrLocked", i, err)
		}
	}
	for _, l := range leases {
		if err := l.Err(); err != nil {
			f.Fatalf("lease %q: %v", l.Key(), err)
		}
		f.unlock(l)
	}
	l := f.lock(b, "many/500")
	f.unlock(l)
}

// oddKeys are keys a driver must store safely and keep apart.
var oddKeys = []string{
	"ключ-🔒", "with spaces", "../../etc/passwd", "a/b", "a_b", "a\\b", "nul\x00byte",
	".", "..", "UPPER", "upper", strings.Repeat("k", 1024), strings.Repeat("k", 1023) + "j",
}

func testOddKeys(f *fixture) {
	a, b := f.client(), f.client()
	var leases []*mutex.Lease
	for _, k := range oddKeys {
		leases = append(leases, f.lock(a, k))
		f.mustBeLocked(b, k, "client a holds it")
	}
	for _, l := range leases {
		f.unlock(l)
	}
	for _, k := range oddKeys { // each was its own key: all free again
		l, err := f.tryLock(b, k)
		if err != nil {
			f.Fatalf("TryLock(%.40q) after release: %v", k, err)
		}
		f.unlock(l)
	}
}

func testDo(f *fixture) {
	c := f.client()
	boom := errors.New("boom")
	err := c.NewMutex("do", mutex.WithTTL(suiteTTL)).Do(f.ctx, func(ctx context.Context) error {
		f.mustBeLocked(f.client(), "do", "Do holds it while fn runs")
		return boom
	})
	if !errors.Is(err, boom) {
		f.Fatalf("Do: %v; want fn's error", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "fn panicked" {
				f.Fatalf("recovered %v; want fn's panic", r)
			}
		}()
		c.NewMutex("do", mutex.WithTTL(suiteTTL)).Do(f.ctx, func(context.Context) error { panic("fn panicked") })
	}()
	l, err := f.tryLock(f.client(), "do")
	if err != nil {
		f.Fatalf("TryLock after a panic in Do: %v; Do must unlock", err)
	}
	f.unlock(l)

	// The caller's context ending does not stop Do from unlocking.
	ctx, cancel := context.WithCancel(f.ctx)
	c.NewMutex("do", mutex.WithTTL(suiteTTL)).Do(ctx, func(context.Context) error { cancel(); return nil })
	l, err = f.tryLock(f.client(), "do")
	if err != nil {
		f.Fatalf("TryLock after Do with a cancelled context: %v; Do must unlock with its own", err)
	}
	f.unlock(l)
}

func testMinHold(f *fixture) {
	a, b := f.client(), f.client()
	before := time.Now() // the grant comes after this, so the hold lasts past before+1s
	l := f.lock(a, "min-hold", mutex.WithMinHold(time.Second))
	f.unlock(l)
	if _, err := f.tryLock(b, "min-hold"); err == nil && time.Since(before) < time.Second {
		f.Fatal("key free right after Unlock, inside the minimum hold")
	}
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	l2, err := b.NewMutex("min-hold", mutex.WithTTL(suiteTTL)).Lock(ctx)
	if err != nil {
		f.Fatalf("Lock after the minimum hold: %v", err)
	}
	if since := time.Since(before); since < time.Second {
		f.Fatalf("acquired %v after the holder began locking, inside its 1s minimum hold", since)
	}
	f.unlock(l2)
}

// testInspect: Inspect tells a free key from a held one, and what it says
// of the holder is true.
func testInspect(f *fixture) {
	a, b := f.client(), f.client()
	_, held, err := b.Inspect(f.ctx, "inspect")
	if errors.Is(err, errors.ErrUnsupported) {
		f.Skipf("the driver cannot inspect locks: %v", err)
	}
	if err != nil || held {
		f.Fatalf("Inspect of a free key: held %v, %v", held, err)
	}
	before := time.Now()
	l := f.lock(a, "inspect")
	who, held, err := b.Inspect(f.ctx, "inspect")
	if err != nil || !held {
		f.Fatalf("Inspect of a held key: held %v, %v", held, err)
	}
	if who.Token != 0 && who.Token != l.Token() {
		f.Errorf("Inspect says token %d; the lease has %d", who.Token, l.Token())
	}
	if who.PID != 0 && who.PID != os.Getpid() {
		f.Errorf("Inspect says pid %d; the holder is %d", who.PID, os.Getpid())
	}
	if host, _ := os.Hostname(); who.Host != "" && who.Host != host {
		f.Errorf("Inspect says host %q; the holder is on %q", who.Host, host)
	}
	if !who.Since.IsZero() && (who.Since.Before(before.Add(-time.Second)) || who.Since.After(time.Now().Add(time.Second))) {
		f.Errorf("Inspect says held since %v; it was acquired at about %v", who.Since, before)
	}
	f.Logf("Inspect: %+v", who)
	f.unlock(l)
	if _, held, err := b.Inspect(f.ctx, "inspect"); err != nil || held {
		f.Fatalf("Inspect after Unlock: held %v, %v", held, err)
	}
}

func testClose(f *fixture) {
	c := f.client()
	l := f.lock(c, "close")
	if err := c.Close(); err != nil {
		f.Fatalf("Close: %v", err)
	}
	f.waitDone(l, 10*time.Second, "lease of a closed client")
	// Closing is not losing: a shutdown must not look like a loss.
	if err := l.Err(); !errors.Is(err, mutex.ErrClosed) || errors.Is(err, mutex.ErrLockLost) {
		f.Errorf("Err of a lease of a closed client: %v; want ErrClosed and not ErrLockLost", err)
	}
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	l2, err := f.client().NewMutex("close", mutex.WithTTL(suiteTTL)).Lock(ctx)
	if err != nil {
		f.Fatalf("Lock after the holder's client closed: %v; Close must release", err)
	}
	f.unlock(l2)
	if err := c.Close(); err != nil {
		f.Errorf("second Close: %v; want nil", err)
	}
	if _, err := c.NewMutex("other").TryLock(f.ctx); !errors.Is(err, mutex.ErrClosed) {
		f.Errorf("TryLock after Close: %v; want ErrClosed", err)
	}
	if _, err := c.NewMutex("other").Lock(f.ctx); !errors.Is(err, mutex.ErrClosed) {
		f.Errorf("Lock after Close: %v; want ErrClosed", err)
	}
	if err := c.Ping(f.ctx); !errors.Is(err, mutex.ErrClosed) {
		f.Errorf("Ping after Close: %v; want ErrClosed", err)
	}
	if err := l.Unlock(f.ctx); !errors.Is(err, mutex.ErrNotHeld) || !errors.Is(err, mutex.ErrClosed) {
		f.Errorf("Unlock after Close: %v; want ErrClosed and ErrNotHeld", err)
	}
}

func testNoGoroutineAfterClose(f *fixture) {
	runtime.GC()
	before := runtime.NumGoroutine()
	conn, err := f.h.NewConnector(f.ctx)
	if err != nil {
		f.Fatalf("NewConnector: %v", err)
	}
	c := mutex.NewClient(conn, f.opts...)
	if err := c.Ping(f.ctx); err != nil {
		f.Fatalf("Ping: %v", err)
	}
	var leases []*mutex.Lease
	for i := range 10 {
		leases = append(leases, f.lock(c, fmt.Sprintf("goroutines/%d", i)))
	}
	waiting := make(chan error, 1)
	go func() { // a waiter, woken by Close
		_, err := c.NewMutex("goroutines/0", mutex.WithTTL(suiteTTL)).Lock(f.ctx)
		waiting <- err
	}()
	f.unlock(leases[9])
	if err := c.Close(); err != nil {
		f.Fatalf("Close: %v", err)
	}
	if err := <-waiting; !errors.Is(err, mutex.ErrClosed) {
		f.Errorf("Lock waiting during Close: %v; want ErrClosed", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			f.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
