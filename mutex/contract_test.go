package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/mutex"
)

// This file tests what package mutex promises drivers and does for them,
// which the conformance suite, a measure of drivers, does not repeat.

// TestDriverPreconditions: every call package mutex makes, while the
// conformance suite puts it through its paces, keeps the promises of
// driver's "What package mutex guarantees a driver".
func TestDriverPreconditions(t *testing.T) {
	t.Parallel()
	var check preconditions
	conformance.Run(t, conformance.MemHarness, mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
			return &checkedLocker{Locker: next, p: &check}
		},
	}))
	check.mu.Lock()
	defer check.mu.Unlock()
	for _, v := range check.broken {
		t.Error(v)
	}
	if check.calls == 0 {
		t.Error("the suite made no driver call through package mutex")
	}
}

// preconditions collects the broken promises of every checkedLocker.
type preconditions struct {
	mu     sync.Mutex
	calls  int
	broken []string
}

func (p *preconditions) check(ok bool, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if !ok && len(p.broken) < 20 {
		p.broken = append(p.broken, fmt.Sprintf(format, args...))
	}
}

// checkedLocker checks each call package mutex makes against the
// guarantees.
type checkedLocker struct {
	driver.Locker
	p      *preconditions
	closes atomic.Int32
}

func keyOK(key string) bool { return len(key) >= 1 && len(key) <= mutex.MaxKeyLen }

func ttlOK(ttl time.Duration) bool { return ttl >= mutex.MinTTL && ttl <= mutex.MaxTTL }

func (l *checkedLocker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	l.p.check(keyOK(req.Key) && !req.Owner.IsZero() && ttlOK(req.TTL),
		"Acquire with a key of %d bytes, zero owner %v, TTL %v", len(req.Key), req.Owner.IsZero(), req.TTL)
	return l.Locker.Acquire(ctx, req)
}

func (l *checkedLocker) Release(ctx context.Context, key string, owner driver.Owner) error {
	l.p.check(keyOK(key) && !owner.IsZero(), "Release with a key of %d bytes, zero owner %v", len(key), owner.IsZero())
	return l.Locker.Release(ctx, key, owner)
}

func (l *checkedLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	for _, r := range batch {
		// TTL 0 verifies a session grant; mem's grants expire, so here
		// every renewal must extend.
		l.p.check(keyOK(r.Key) && !r.Owner.IsZero() && ttlOK(r.TTL),
			"Renew of a key of %d bytes, zero owner %v, TTL %v", len(r.Key), r.Owner.IsZero(), r.TTL)
	}
	l.p.check(len(batch) > 0, "Renew with an empty batch")
	l.Locker.Renew(ctx, batch)
}

func (l *checkedLocker) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	l.p.check(keyOK(key) && wake != nil && cap(wake) > 0, "Watch of a key of %d bytes, channel nil %v or unbuffered", len(key), wake == nil)
	return l.Locker.Watch(key, owner, wake)
}

func (l *checkedLocker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	l.p.check(keyOK(key), "Inspect of a key of %d bytes", len(key))
	return l.Locker.Inspect(ctx, key)
}

func (l *checkedLocker) Close() error {
	n := l.closes.Add(1)
	l.p.check(n == 1, "Close called %d times by one client", n)
	return l.Locker.Close()
}

// callCounter counts the driver calls package mutex makes.
type callCounter struct {
	driver.Locker
	calls *atomic.Int32
}

func (l callCounter) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	l.calls.Add(1)
	return l.Locker.Acquire(ctx, req)
}

func (l callCounter) Release(ctx context.Context, key string, owner driver.Owner) error {
	l.calls.Add(1)
	return l.Locker.Release(ctx, key, owner)
}

func (l callCounter) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	l.calls.Add(1)
	return l.Locker.Watch(key, owner, wake)
}

// TestBadInput: malformed keys, TTLs and hold times fail with ErrInvalid
// in TryLock, Lock and Do, before any driver call, and lose nothing the
// client holds.
func TestBadInput(t *testing.T) {
	// Bounded: a Lock that lets bad input through may wait.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	table := mem.NewTable()
	var calls atomic.Int32
	c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { return callCounter{next, &calls} },
	}))
	defer c.Close()
	held, err := c.NewMutex("bad-input").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		what string
		m    *mutex.Mutex
	}{
		{"empty key", c.NewMutex("")},
		{"oversized key", c.NewMutex(strings.Repeat("x", mutex.MaxKeyLen+1))},
		{"zero TTL", c.NewMutex("k", mutex.WithTTL(0))},
		{"negative TTL", c.NewMutex("k", mutex.WithTTL(-time.Second))},
		{"TTL below the minimum", c.NewMutex("k", mutex.WithTTL(mutex.MinTTL-1))},
		{"absurd TTL", c.NewMutex("k", mutex.WithTTL(mutex.MaxTTL+1))},
		{"negative min hold", c.NewMutex("k", mutex.WithMinHold(-1))},
		{"absurd min hold", c.NewMutex("k", mutex.WithMinHold(mutex.MaxMinHold+1))},
		{"bad option on a held key", c.NewMutex("bad-input", mutex.WithTTL(0))},
	}
	calls.Store(0)
	for _, b := range bad {
		for _, try := range []func(context.Context) (*mutex.Lease, error){b.m.TryLock, b.m.Lock} {
			l, err := try(ctx)
			if !errors.Is(err, mutex.ErrInvalid) || l != nil {
				t.Errorf("%s: lease %v, error %v; want an error matching ErrInvalid", b.what, l, err)
			}
		}
		if err := b.m.Do(ctx, func(context.Context) error { return nil }); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("%s: Do: %v; want ErrInvalid", b.what, err)
		}
		if err := b.m.TryDo(ctx, func(context.Context) error { return nil }); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("%s: TryDo: %v; want ErrInvalid", b.what, err)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("bad input made %d driver calls; want none: drivers rely on package mutex's checks", n)
	}
	if err := held.Err(); err != nil {
		t.Fatalf("a held lease after bad input: %v", err)
	}
	if _, ok := table.Holder("bad-input"); !ok {
		t.Fatal("bad input lost what the client held")
	}
	if err := held.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// reentrantBackend grants a key again to the Locker that holds it, whatever
// the owner, as a PostgreSQL session stacks advisory locks.
type reentrantBackend struct {
	driver.Locker
	mu   sync.Mutex
	mine map[string]bool
}

func (l *reentrantBackend) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	g, err := l.Locker.Acquire(ctx, req)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.mine[req.Key] = true
	case errors.Is(err, driver.ErrLocked) && l.mine[req.Key]:
		return driver.Grant{Token: 1, Validity: req.TTL}, nil
	}
	return g, err
}

// TestInClientExclusion: two Mutex values of one client exclude each other
// in package mutex, without leaning on the backend, which may grant a key
// again to the connection that holds it.
func TestInClientExclusion(t *testing.T) {
	ctx := context.Background()
	table := mem.NewTable()
	var backend *reentrantBackend
	c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
			backend = &reentrantBackend{Locker: next, mine: make(map[string]bool)}
			return backend
		},
	}))
	defer c.Close()
	l, err := c.NewMutex("in-client").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The backend does re-grant: only package mutex stands between the two.
	if _, err := backend.Acquire(ctx, driver.AcquireRequest{Key: "in-client", Owner: driver.NewOwner(), TTL: time.Second}); err != nil {
		t.Fatalf("the re-entrant backend refused its own key: %v", err)
	}

	if _, err := c.NewMutex("in-client").TryLock(ctx); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock by a second Mutex of the client: %v; want ErrLocked", err)
	}
	got := make(chan error, 1)
	var released atomic.Bool
	go func() {
		l2, err := c.NewMutex("in-client").Lock(ctx)
		if err == nil {
			if !released.Load() {
				err = errors.New("a second Mutex of the client got a held key")
			}
			l2.Unlock(ctx)
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("Lock by a second Mutex returned while the first held the key: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	released.Store(true)
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("second Mutex's Lock: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second Mutex's Lock did not return within 5s of the Unlock")
	}
}
