package mem_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestClockExpiresGrants: with an injected clock, a grant expires when the
// clock passes its TTL, without sleeping, and its holder finds out at its
// next renewal.
func TestClockExpiresGrants(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	table := mem.NewTable(mem.WithClock(clock.Now))
	a, err := mem.FromTable(table).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := mem.FromTable(table).Connect(ctx)
	owner := driver.NewOwner()
	g, err := a.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: owner, TTL: 10 * time.Second})
	if err != nil || g.Token != 1 || g.Validity != 10*time.Second {
		t.Fatalf("Acquire = %+v, %v", g, err)
	}
	clock.Advance(9 * time.Second)
	if _, err := b.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Second}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("Acquire before the TTL: %v; want ErrLocked", err)
	}
	clock.Advance(time.Second)
	g2, err := b.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Second})
	if err != nil || g2.Token != 2 {
		t.Fatalf("Acquire at the TTL: %+v, %v; want token 2", g2, err)
	}
	batch := []driver.Renewal{{Key: "k", Owner: owner, TTL: 10 * time.Second}}
	a.Renew(ctx, batch)
	if !errors.Is(batch[0].Err, driver.ErrNotHeld) {
		t.Fatalf("Renew of the expired grant: %v; want ErrNotHeld", batch[0].Err)
	}
	if err := a.Release(ctx, "k", owner); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release of the expired grant: %v; want ErrNotHeld", err)
	}
	if tok, held := table.Holder("k"); !held || tok != 2 {
		t.Fatalf("Holder = %d, %v; want the new holder's token 2", tok, held)
	}
}

// TestRetryRefreshesGrant: an Acquire retried by the owner that holds the
// key returns its grant with a validity counted from the retry, so the
// grant must last that long: it is extended to the retry's TTL.
func TestRetryRefreshesGrant(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	table := mem.NewTable(mem.WithClock(clock.Now))
	a, _ := mem.FromTable(table).Connect(ctx)
	b, _ := mem.FromTable(table).Connect(ctx)
	req := driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: 10 * time.Second}
	if _, err := a.Acquire(ctx, req); err != nil {
		t.Fatal(err)
	}
	clock.Advance(9 * time.Second)
	g, err := a.Acquire(ctx, req) // the retry of an attempt whose reply was lost
	if err != nil || g.Token != 1 || g.Validity != 10*time.Second {
		t.Fatalf("retried Acquire = %+v, %v; want token 1, validity 10s", g, err)
	}
	clock.Advance(9 * time.Second)
	if _, err := b.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Second}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("Acquire within the retried grant's validity: %v; want ErrLocked", err)
	}
}

// TestWatchWakesOnRelease: a watcher hears of releases, drops and expiries
// made through the table.
func TestWatchWakesOnRelease(t *testing.T) {
	ctx := context.Background()
	table := mem.NewTable()
	l, _ := mem.FromTable(table).Connect(ctx)
	wake := make(chan struct{}, 1)
	stop, err := l.Watch("k", driver.NewOwner(), wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	owner := driver.NewOwner()
	for _, free := range []func(){
		func() { l.Release(ctx, "k", owner) },
		func() { table.Drop("k") },
		func() { table.Expire("k") },
	} {
		if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: owner, TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
		free()
		select {
		case <-wake:
		default:
			t.Fatal("no wake-up after the key was freed")
		}
	}
}

// TestWatchRegistrationsApart: two registrations of one channel are two:
// stopping one leaves the other.
func TestWatchRegistrationsApart(t *testing.T) {
	ctx := context.Background()
	l, _ := mem.FromTable(mem.NewTable()).Connect(ctx)
	wake := make(chan struct{}, 1)
	stop1, err := l.Watch("k", driver.NewOwner(), wake)
	if err != nil {
		t.Fatal(err)
	}
	stop2, err := l.Watch("k", driver.NewOwner(), wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	stop1()
	stop1()
	owner := driver.NewOwner()
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: owner, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx, "k", owner); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	default:
		t.Fatal("no wake-up for the registration still in place")
	}
}

// TestCloseReleases: closing a Locker frees its grants, and later calls
// say it is closed.
func TestCloseReleases(t *testing.T) {
	ctx := context.Background()
	table := mem.NewTable()
	l, _ := mem.FromTable(table).Connect(ctx)
	l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Minute})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, held := table.Holder("k"); held {
		t.Fatal("grant kept after Close")
	}
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Minute}); !errors.Is(err, driver.ErrClosed) {
		t.Fatalf("Acquire after Close: %v; want ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
