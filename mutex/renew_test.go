package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/mutex"
)

// These tests run in synctest bubbles: time is virtual, so hours of
// renewals take no time and timer-driven claims are exact, not timed.

// renewCounter counts the driver's Renew calls and the leases they carry,
// and can make every renewal fail.
type renewCounter struct {
	calls, leases atomic.Int64
	fail          atomic.Bool
}

func (rc *renewCounter) middleware() mutex.Middleware {
	return mutex.Middleware{Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
		return &countingLocker{Locker: next, rc: rc}
	}}
}

type countingLocker struct {
	driver.Locker
	rc *renewCounter
}

func (l *countingLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	l.rc.calls.Add(1)
	l.rc.leases.Add(int64(len(batch)))
	if l.rc.fail.Load() {
		for i := range batch {
			batch[i].Err = fmt.Errorf("injected: %w", driver.ErrUnavailable)
		}
		return
	}
	l.Locker.Renew(ctx, batch)
}

// Release fails too while renewals fail: the backend is out of reach.
func (l *countingLocker) Release(ctx context.Context, key string, owner driver.Owner) error {
	if l.rc.fail.Load() {
		return fmt.Errorf("injected: %w", driver.ErrUnavailable)
	}
	return l.Locker.Release(ctx, key, owner)
}

// TestRenewalIsBatched: 10,000 held leases are renewed in a few calls per
// interval, by one goroutine, not one per lease.
func TestRenewalIsBatched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, ttl = 10_000, 3 * time.Second
		var rc renewCounter
		table := mem.NewTable()
		c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(rc.middleware()))
		defer c.Close()
		before := runtime.NumGoroutine()
		leases := make([]*mutex.Lease, n)
		for i := range leases {
			l, err := c.NewMutex(fmt.Sprint("key/", i), mutex.WithTTL(ttl)).TryLock(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			leases[i] = l
			if i%1000 == 999 {
				time.Sleep(10 * time.Millisecond) // spread acquisitions, as real traffic would
			}
		}
		if g := runtime.NumGoroutine() - before; g > 2 {
			t.Errorf("%d goroutines for %d leases; want the one renewal loop", g, n)
		}
		const hold = 10 * ttl
		time.Sleep(hold)
		for _, l := range leases {
			if err := l.Err(); err != nil {
				t.Fatalf("lease %s lost: %v", l.Key(), err)
			}
		}
		// Each lease is renewed about every ttl/3: some 30 renewals in 10 TTLs.
		perLease := float64(rc.leases.Load()) / n
		if perLease < 20 || perLease > 60 {
			t.Errorf("%.1f renewals per lease in %v with TTL %v; want about 30", perLease, hold, ttl)
		}
		if calls := rc.calls.Load(); calls > 200 {
			t.Errorf("%d Renew calls for %d leases over %v: renewals are not batched", calls, n, hold)
		}
		t.Logf("%d Renew calls carried %d lease renewals", rc.calls.Load(), rc.leases.Load())
	})
}

// TestLossBeforeExpiry: when renewals keep failing, the lease is reported
// lost before its grant could lapse on the backend, so before anyone else
// can take the key.
func TestLossBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ttl = 2 * time.Second
		var rc renewCounter
		table := mem.NewTable()
		c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(rc.middleware()))
		defer c.Close()
		other := mutex.NewClient(mem.FromTable(table))
		defer other.Close()

		rc.fail.Store(true)
		l, err := c.NewMutex("k", mutex.WithTTL(ttl)).Lock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		acquired := time.Now()
		<-l.Done()
		lostAfter := time.Since(acquired)
		if lostAfter >= ttl {
			t.Fatalf("loss reported %v after acquisition; the grant lapses at %v", lostAfter, ttl)
		}
		if _, held := table.Holder("k"); !held {
			t.Fatal("the grant had lapsed before the loss was reported")
		}
		if rc.calls.Load() < 3 {
			t.Errorf("%d renewal attempts before giving up; want retries until the validity ran out", rc.calls.Load())
		}
		if !errors.Is(l.Err(), mutex.ErrLockLost) {
			t.Fatalf("Err = %v; want ErrLockLost", l.Err())
		}
		_, err = other.NewMutex("k").TryLock(t.Context())
		if !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("another client's TryLock when the loss was reported: %v; want ErrLocked (the grant is still live)", err)
		}
		time.Sleep(ttl)
		l2, err := other.NewMutex("k").TryLock(t.Context())
		if err != nil {
			t.Fatalf("TryLock after the grant lapsed: %v", err)
		}
		l2.Unlock(t.Context())
	})
}

// TestErrSeesExpiryAtOnce: Err checks the clock itself, so a lease past its
// validity reads as lost even before the renewal loop runs.
func TestErrSeesExpiryAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rc renewCounter
		rc.fail.Store(true)
		c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(rc.middleware()))
		defer c.Close()
		l, err := c.NewMutex("k", mutex.WithTTL(time.Second)).Lock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		if err := l.Err(); err != nil {
			t.Fatalf("Err at half the TTL: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
		if err := l.Err(); !errors.Is(err, mutex.ErrLockLost) {
			t.Fatalf("Err at the TTL: %v; want ErrLockLost", err)
		}
		err = l.Unlock(t.Context())
		if !errors.Is(err, mutex.ErrLockLost) || !errors.Is(err, mutex.ErrNotHeld) {
			t.Fatalf("Unlock: %v; want ErrLockLost and ErrNotHeld", err)
		}
	})
}

// TestDropReportsLossAtOnce: mem's Drop tells the holder at once, so an
// application can test its loss handling without waiting for renewal.
func TestDropReportsLossAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		table := mem.NewTable()
		c := mutex.NewClient(mem.FromTable(table))
		defer c.Close()
		var cause error
		err := c.NewMutex("job").Do(t.Context(), func(ctx context.Context) error {
			table.Drop("job")
			<-ctx.Done()
			cause = context.Cause(ctx)
			return ctx.Err()
		})
		if !errors.Is(cause, mutex.ErrLockLost) {
			t.Fatalf("cause = %v; want ErrLockLost", cause)
		}
		if !errors.Is(err, mutex.ErrLockLost) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Do = %v; want fn's error and the loss", err)
		}
	})
}

// TestMinHoldRenewsUntilRelease: a lease unlocked inside its minimum hold
// stays held, renewed, until the hold ends, and is then released.
func TestMinHoldRenewsUntilRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		table := mem.NewTable()
		c := mutex.NewClient(mem.FromTable(table))
		defer c.Close()
		l, err := c.NewMutex("cron", mutex.WithTTL(time.Second), mutex.WithMinHold(time.Minute)).Lock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(59 * time.Second)
		if _, held := table.Holder("cron"); !held {
			t.Fatal("released inside the minimum hold")
		}
		time.Sleep(2 * time.Second)
		if _, held := table.Holder("cron"); held {
			t.Fatal("still held after the minimum hold")
		}
	})
}

// TestCancelRacingGrantReleases: a grant that arrives as the caller's
// context ends is released, not leaked.
func TestCancelRacingGrantReleases(t *testing.T) {
	table := mem.NewTable()
	ctx, cancel := context.WithCancel(context.Background())
	racing := mutex.Middleware{Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
		return cancelOnAcquire{Locker: next, cancel: cancel}
	}}
	c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(racing))
	_, err := c.NewMutex("k").Lock(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock = %v; want context.Canceled", err)
	}
	c.Close() // waits for the background release
	if _, held := table.Holder("k"); held {
		t.Fatal("the grant that raced the cancel was left held")
	}
}

type cancelOnAcquire struct {
	driver.Locker
	cancel context.CancelFunc
}

func (l cancelOnAcquire) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	g, err := l.Locker.Acquire(ctx, req)
	l.cancel()
	return g, err
}

// TestRetryKeepsOwner: after an ambiguous failure (the reply lost), the
// client releases with the attempt's own owner, so a grant made in flight
// does not block the key until its TTL.
func TestAmbiguousFailureReleases(t *testing.T) {
	table := mem.NewTable()
	lossy := mutex.Middleware{Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
		return replyLost{next}
	}}
	c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(lossy))
	_, err := c.NewMutex("k").TryLock(context.Background())
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("TryLock = %v; want the driver's ErrUnavailable", err)
	}
	c.Close()
	if _, held := table.Holder("k"); held {
		t.Fatal("a grant whose reply was lost stayed held")
	}
}

type replyLost struct{ driver.Locker }

func (l replyLost) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	l.Locker.Acquire(ctx, req)
	return driver.Grant{}, fmt.Errorf("reply lost: %w", driver.ErrUnavailable)
}

// TestConcurrentCloseAndLock: Close racing many Lock calls loses nothing and
// leaves nothing held.
func TestConcurrentCloseAndLock(t *testing.T) {
	table := mem.NewTable()
	c := mutex.NewClient(mem.FromTable(table))
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := c.NewMutex(fmt.Sprint("k", i%5)).Lock(context.Background())
			if err != nil {
				if !errors.Is(err, mutex.ErrClosed) {
					t.Errorf("Lock: %v", err)
				}
				return
			}
			l.Unlock(context.Background())
		}()
	}
	c.Close()
	wg.Wait()
	for i := range 5 {
		if _, held := table.Holder(fmt.Sprint("k", i)); held {
			t.Errorf("k%d held after Close", i)
		}
	}
}
