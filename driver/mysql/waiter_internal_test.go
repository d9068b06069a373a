package mysql

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// internalLocker connects a locker of this package to the test server (see
// service_test.go), or skips as the other tests do.
func internalLocker(t *testing.T, ns string, opts ...Option) *locker {
	t.Helper()
	dsn := os.Getenv("MUTEXKIT_MYSQL_DSN")
	if dsn == "" {
		dsn = "mysql://root@127.0.0.1:3306/test"
	}
	c, err := NewConnector(dsn, append([]Option{WithNamespace(ns)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	l, err := c.Connect(ctx)
	if err != nil {
		if os.Getenv("MUTEXKIT_REQUIRE_SERVICES") == "1" {
			t.Fatalf("MySQL/MariaDB: %v", err)
		}
		t.Skipf("no MySQL/MariaDB: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*locker)
}

func randomNS(t *testing.T) string {
	var b [6]byte
	rand.Read(b[:])
	return t.Name() + "/" + hex.EncodeToString(b[:])
}

// A heartbeat's check still aimed at a waiter session (a grant released on
// it, the session recycled for another owner's wait) waits for its own
// deadline and leaves the wait alone: the wait holds the session's slot.
// Without it the check queued behind GET_LOCK on the connection, missed
// its reply deadline and killed the waiter session.
func TestStaleCheckLeavesWaiterSession(t *testing.T) {
	ns := randomNS(t)
	l, other := internalLocker(t, ns), internalLocker(t, ns)
	ctx := t.Context()
	held := driver.Owner{9}
	if _, err := other.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: held}); err != nil {
		t.Fatal(err)
	}
	// A grant through a wait, released: its waiter session goes idle.
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.Owner{1}, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt: %v", err)
	}
	if err := other.Release(ctx, "k", held); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.Owner{1}, Wait: true})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kept key never became the grant: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.mu.Lock()
	s := l.held["k"].s
	l.mu.Unlock()
	if !s.waiter {
		t.Fatal("the grant is not on a waiter session")
	}
	if err := l.Release(ctx, "k", driver.Owner{1}); err != nil {
		t.Fatal(err)
	}
	// The same session now waits for another key, for another owner.
	if _, err := other.Acquire(ctx, driver.AcquireRequest{Key: "k2", Owner: held}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k2", Owner: driver.Owner{2}, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt: %v", err)
	}
	// The stale check.
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	start := time.Now()
	err := l.verify(cctx, s)
	cancel()
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("the stale check took %v", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the stale check: %v; want DeadlineExceeded (the slot is the wait's)", err)
	}
	if l.isDead(s) {
		t.Fatal("the stale check killed the waiter session")
	}
	// The wait goes on, and is granted.
	if err := other.Release(ctx, "k2", held); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k2", Owner: driver.Owner{2}, Wait: true})
		if err == nil {
			break
		}
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("the wait was not granted: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
