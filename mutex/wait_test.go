package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/mutex"
)

// TestWaitKeepsTheCause: a Lock whose ctx ends says what it was waiting
// out: a held key (ErrLocked), or a backend out of reach (the driver's
// error, ErrUnavailable), besides the ctx's error.
func TestWaitKeepsTheCause(t *testing.T) {
	ctx := context.Background()
	table := mem.NewTable()
	c := mutex.NewClient(mem.FromTable(table))
	defer c.Close()
	other := mutex.NewClient(mem.FromTable(table))
	defer other.Close()

	held, err := other.NewMutex("k").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock(ctx)
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = c.NewMutex("k").Lock(wctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, mutex.ErrLocked) || errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("Lock on a held key = %v; want DeadlineExceeded and ErrLocked", err)
	}

	// Held by another Mutex of the same client.
	local, err := c.NewMutex("local").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Unlock(ctx)
	wctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err = c.NewMutex("local").Lock(wctx); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("Lock on a key this client holds = %v; want DeadlineExceeded and ErrLocked", err)
	}

	down := errors.New("dial tcp 10.0.0.1:6379: connection refused")
	var failures atomic.Int32
	failures.Store(1 << 30)
	out := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
			return failing{next, &failures, fmt.Errorf("%w: %w", down, driver.ErrUnavailable)}
		},
	}))
	defer out.Close()
	wctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = out.NewMutex("free").Lock(wctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, driver.ErrUnavailable) || errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("Lock with the backend out of reach = %v; want DeadlineExceeded and ErrUnavailable, not ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Lock with the backend out of reach = %q; want the cause in the message", err)
	}
}

// failing fails every Acquire with err while failures lasts.
type failing struct {
	driver.Locker
	failures *atomic.Int32
	err      error
}

func (l failing) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	if l.failures.Add(-1) >= 0 {
		return driver.Grant{}, l.err
	}
	return l.Locker.Acquire(ctx, req)
}

// TestLockWaitsOutFirstConnect: a backend out of reach when the client
// first connects is waited out by Lock, as it is once connected; TryLock
// reports it.
func TestLockWaitsOutFirstConnect(t *testing.T) {
	ctx := context.Background()
	conn := &flakyConnector{Connector: mem.FromTable(mem.NewTable())}
	conn.failures.Store(3)
	c := mutex.NewClient(conn)
	defer c.Close()
	if _, err := c.NewMutex("k").TryLock(ctx); !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("TryLock with the backend out of reach: %v; want ErrUnavailable", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := c.NewMutex("k").Lock(wctx)
	if err != nil {
		t.Fatalf("Lock through failed connects: %v", err)
	}
	l.Unlock(ctx)
	if n := conn.connects.Load(); n != 4 {
		t.Fatalf("%d connects; want 4 (3 failed)", n)
	}
}

type flakyConnector struct {
	driver.Connector
	failures, connects atomic.Int32
}

func (c *flakyConnector) Connect(ctx context.Context) (driver.Locker, error) {
	c.connects.Add(1)
	if c.failures.Add(-1) >= 0 {
		return nil, fmt.Errorf("dial: connection refused: %w", driver.ErrUnavailable)
	}
	return c.Connector.Connect(ctx)
}

// TestDeniedIsNotWaitedOut: a backend that refuses the client's
// credentials fails Lock at once, with ErrDenied: waiting cannot help.
func TestDeniedIsNotWaitedOut(t *testing.T) {
	var failures atomic.Int32
	failures.Store(1 << 30)
	c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
			return failing{next, &failures, fmt.Errorf("password authentication failed: %w", driver.ErrDenied)}
		},
	}))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.NewMutex("k").Lock(ctx)
	if !errors.Is(err, mutex.ErrDenied) || !errors.Is(err, driver.ErrDenied) || ctx.Err() != nil {
		t.Fatalf("Lock refused by the backend = %v (ctx %v); want ErrDenied at once", err, ctx.Err())
	}
	if n := (1 << 30) - failures.Load(); n != 1 {
		t.Fatalf("%d attempts; want 1", n)
	}
}

// TestWakeStormKeepsBackoff: wake-ups that do not lead to a grant (a
// driver that signals all the time, or waiters woken by each other's
// failed attempts) cannot turn a wait into a loop of attempts.
func TestWakeStormKeepsBackoff(t *testing.T) {
	n, err := attemptsWhileHeld(t, 500*time.Millisecond, wakeAlways)
	// Gates of 2, 4, then 8 ms: about 65 attempts in 500 ms. Without
	// them, one per wake-up: hundreds of thousands.
	if n > 100 {
		t.Fatalf("%d attempts in 500 ms of fruitless wake-ups; want the backoff kept (at most 100)", n)
	}
	if !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("Lock = %v; want ErrLocked at the deadline", err)
	}
}

// attemptsWhileHeld runs a Lock for d on a key another client holds,
// through a driver whose Watch is watch, and returns the acquire attempts
// it made and its error.
func attemptsWhileHeld(t *testing.T, d time.Duration, watch func(string, chan<- struct{}) (func(), error)) (int32, error) {
	t.Helper()
	ctx := context.Background()
	table := mem.NewTable()
	holder := mutex.NewClient(mem.FromTable(table))
	defer holder.Close()
	held, err := holder.NewMutex("k").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock(ctx)

	var attempts atomic.Int32
	c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { return watching{next, &attempts, watch} },
	}))
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err = c.NewMutex("k").Lock(wctx)
	return attempts.Load(), err
}

// watching counts attempts, and watches as its watch func says.
type watching struct {
	driver.Locker
	attempts *atomic.Int32
	watch    func(string, chan<- struct{}) (func(), error)
}

func (l watching) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	l.attempts.Add(1)
	return l.Locker.Acquire(ctx, req)
}

func (l watching) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	return l.watch(key, wake)
}

// wakeAlways wakes its watcher all the time, until stopped.
func wakeAlways(_ string, wake chan<- struct{}) (func(), error) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case wake <- struct{}{}:
			}
		}
	}()
	return func() { close(done); <-stopped }, nil
}
