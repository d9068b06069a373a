package middleware_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

// retryOver wraps a fresh mem Locker in Retry over flaky.
func retryOver(t *testing.T, table *mem.Table, fails, renewFails *atomic.Int32, opts ...middleware.RetryOption) (driver.Locker, *flakyLocker) {
	t.Helper()
	base, err := mem.FromTable(table).Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fl := flaky(fails, renewFails).Wrap(base, mutex.Info{Driver: "mem"}).(*flakyLocker)
	opts = append([]middleware.RetryOption{middleware.WithBackoff(time.Millisecond, 5*time.Millisecond)}, opts...)
	return middleware.Retry(opts...).Wrap(fl, mutex.Info{Driver: "mem"}), fl
}

// TestRetryAcquireKeepsOwner: a transient failure is retried with the same
// owner, so a grant whose reply was lost is found as the retry's own.
func TestRetryAcquireKeepsOwner(t *testing.T) {
	var fails atomic.Int32
	fails.Store(2)
	table := mem.NewTable()
	l, fl := retryOver(t, table, &fails, nil)
	owner := driver.NewOwner()
	g, err := l.Acquire(context.Background(), driver.AcquireRequest{Key: "k", Owner: owner, TTL: time.Minute})
	if err != nil {
		t.Fatalf("Acquire through 2 transient failures: %v", err)
	}
	if n := fl.acquires.Load(); n != 3 {
		t.Fatalf("%d attempts; want 3", n)
	}
	for _, o := range fl.owners {
		if o != owner {
			t.Fatal("a retry used another owner value")
		}
	}
	if tok, _ := table.Holder("k"); tok != g.Token || g.Token != 1 {
		t.Fatalf("token %d, table holds %d; want the first attempt's grant, token 1", g.Token, tok)
	}
}

func TestRetryGivesUp(t *testing.T) {
	var fails atomic.Int32
	fails.Store(100)
	l, fl := retryOver(t, mem.NewTable(), &fails, nil, middleware.WithAttempts(3))
	_, err := l.Acquire(context.Background(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Minute})
	if !errors.Is(err, driver.ErrUnavailable) || fl.acquires.Load() != 3 {
		t.Fatalf("Acquire = %v after %d attempts; want ErrUnavailable after 3", err, fl.acquires.Load())
	}

	// A context that ends stops the retries.
	fl.acquires.Store(0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l2, fl2 := retryOver(t, mem.NewTable(), &fails, nil, middleware.WithAttempts(100))
	l2.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Minute})
	if n := fl2.acquires.Load(); n != 1 {
		t.Fatalf("%d attempts with a cancelled context; want 1", n)
	}
}

// TestRetryNeverRetriesContention: ErrLocked and ErrNotHeld are answers,
// not failures.
func TestRetryNeverRetriesContention(t *testing.T) {
	var fails atomic.Int32
	table := mem.NewTable()
	l, fl := retryOver(t, table, &fails, nil)
	ctx := context.Background()
	holder, _ := mem.FromTable(table).Connect(ctx)
	holder.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Minute})
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Minute}); !errors.Is(err, driver.ErrLocked) {
		t.Fatal(err)
	}
	if n := fl.acquires.Load(); n != 1 {
		t.Fatalf("%d attempts on a held key; want 1", n)
	}
	if err := l.Release(ctx, "k", driver.NewOwner()); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatal(err)
	}
}

// TestRetryRenewRetriesOnlyUnknown: a renewal retries the leases whose
// outcome was unknown, and keeps the answers it had.
func TestRetryRenewRetriesOnlyUnknown(t *testing.T) {
	var fails, renewFails atomic.Int32
	renewFails.Store(1)
	table := mem.NewTable()
	l, _ := retryOver(t, table, &fails, &renewFails)
	ctx := context.Background()
	owner := driver.NewOwner()
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "held", Owner: owner, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	batch := []driver.Renewal{
		{Key: "held", Owner: owner, TTL: time.Minute},
		{Key: "never", Owner: owner, TTL: time.Minute},
	}
	l.Renew(ctx, batch)
	if batch[0].Err != nil || batch[0].Validity != time.Minute {
		t.Errorf("held lease after a transient failure: %v, %v; want renewed on retry", batch[0].Validity, batch[0].Err)
	}
	if !errors.Is(batch[1].Err, driver.ErrNotHeld) {
		t.Errorf("lease never held: %v; want ErrNotHeld", batch[1].Err)
	}
}
