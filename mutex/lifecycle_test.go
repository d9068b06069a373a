package mutex_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/mutex"
)

// TestTryDo: one attempt; a held key is ErrLocked and fn does not run.
func TestTryDo(t *testing.T) {
	ctx := context.Background()
	table := mem.NewTable()
	podA := mutex.NewClient(mem.FromTable(table))
	defer podA.Close()
	podB := mutex.NewClient(mem.FromTable(table))
	defer podB.Close()

	ran := 0
	err := podA.NewMutex("job").TryDo(ctx, func(ctx context.Context) error {
		ran++
		err := podB.NewMutex("job").TryDo(ctx, func(context.Context) error { ran += 10; return nil })
		if !errors.Is(err, mutex.ErrLocked) {
			t.Errorf("TryDo while held = %v; want ErrLocked", err)
		}
		return nil
	})
	if err != nil || ran != 1 {
		t.Fatalf("TryDo = %v, ran %d; want nil, once", err, ran)
	}
	if _, held := table.Holder("job"); held {
		t.Fatal("TryDo left the key held")
	}
	jobErr := errors.New("job failed")
	if err := podB.NewMutex("job").TryDo(ctx, func(context.Context) error { return jobErr }); !errors.Is(err, jobErr) {
		t.Fatalf("TryDo = %v; want fn's error", err)
	}
}

// TestCloseIsNotLoss: a lease ended by Client.Close is closed, not lost,
// in its Err, in Do's context, in Do's error and for observers.
func TestCloseIsNotLoss(t *testing.T) {
	ends := make(chan error, 1)
	c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(mutex.Middleware{
		Observer: &mutex.Observer{LeaseEnd: func(_ context.Context, ev mutex.LeaseEnd) { ends <- ev.Err }},
	}))
	inFn := make(chan struct{})
	var cause error
	done := make(chan error)
	m := c.NewMutex("k")
	go func() {
		done <- m.Do(context.Background(), func(ctx context.Context) error {
			inFn <- struct{}{}
			<-ctx.Done()
			cause = context.Cause(ctx)
			return cause
		})
	}()
	<-inFn
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	err := <-done
	if !errors.Is(cause, mutex.ErrClosed) || errors.Is(cause, mutex.ErrLockLost) {
		t.Errorf("Do's context cause = %v; want ErrClosed, not ErrLockLost", cause)
	}
	if !errors.Is(err, mutex.ErrClosed) || errors.Is(err, mutex.ErrLockLost) {
		t.Errorf("Do = %v; want ErrClosed, not ErrLockLost", err)
	}
	if strings.Count(err.Error(), "client closed") != 1 {
		t.Errorf("Do = %q; want the end said once", err)
	}
	if end := <-ends; !errors.Is(end, driver.ErrClosed) || errors.Is(end, mutex.ErrLockLost) {
		t.Errorf("observed end = %v; want driver.ErrClosed, not ErrLockLost", end)
	}
}

// TestLeaseErrAfterClose: Err and Unlock of a lease whose client closed.
func TestLeaseErrAfterClose(t *testing.T) {
	ctx := context.Background()
	c := mutex.NewClient(mem.FromTable(mem.NewTable()))
	l, err := c.NewMutex("k", mutex.WithTTL(time.Second)).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	<-l.Done()
	if err := l.Err(); !errors.Is(err, mutex.ErrClosed) || errors.Is(err, mutex.ErrLockLost) {
		t.Fatalf("Err after Close = %v; want ErrClosed, not ErrLockLost", err)
	}
	if err := l.Unlock(ctx); !errors.Is(err, mutex.ErrClosed) || !errors.Is(err, mutex.ErrNotHeld) {
		t.Fatalf("Unlock after Close = %v; want ErrClosed and ErrNotHeld", err)
	}
}

// TestNilLeaseUnlock: the deferred Unlock of a failed Lock does not panic.
func TestNilLeaseUnlock(t *testing.T) {
	var l *mutex.Lease
	if err := l.Unlock(context.Background()); !errors.Is(err, mutex.ErrNotHeld) {
		t.Fatalf("nil Unlock = %v; want ErrNotHeld", err)
	}
}

// TestDoSaysLossOnce: a Do whose fn returns its context's cause reports
// the loss once, not again from Unlock.
func TestDoSaysLossOnce(t *testing.T) {
	table := mem.NewTable()
	c := mutex.NewClient(mem.FromTable(table))
	defer c.Close()
	err := c.NewMutex("k").Do(context.Background(), func(ctx context.Context) error {
		table.Drop("k")
		<-ctx.Done()
		return context.Cause(ctx)
	})
	if !errors.Is(err, mutex.ErrLockLost) {
		t.Fatalf("Do = %v; want ErrLockLost", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("Do = %q; want the loss said once", err)
	}
	// fn that ignores the loss still gets it from Do.
	err = c.NewMutex("k2").Do(context.Background(), func(ctx context.Context) error {
		table.Drop("k2")
		<-ctx.Done()
		return nil
	})
	if !errors.Is(err, mutex.ErrLockLost) {
		t.Fatalf("Do whose fn ignored the loss = %v; want ErrLockLost", err)
	}
}
