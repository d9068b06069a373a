package mutex_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/mutex"
)

type lockValue struct{}

// TestObservedLeaseContext: a lease's renewals and end are observed, and
// Do unlocks, with the context LockStart returned, detached: its values
// stay, and it is not done although the Lock's context is.
func TestObservedLeaseContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu   sync.Mutex // hooks run on the renewer's goroutines
			seen []string
		)
		check := func(what string, ctx context.Context) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, what)
			if ctx.Value(lockValue{}) != "lock" {
				t.Errorf("%s: the context lacks LockStart's value", what)
			}
			if ctx.Err() != nil || context.Cause(ctx) != nil {
				t.Errorf("%s: context done (%v, cause %v); want it detached", what, ctx.Err(), context.Cause(ctx))
			}
		}
		var releases []context.Context
		c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(mutex.Middleware{
			Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
				return releaseSpy{Locker: next, ctxs: &releases}
			},
			Observer: &mutex.Observer{
				LockStart: func(ctx context.Context, _ mutex.LockStart) context.Context {
					return context.WithValue(ctx, lockValue{}, "lock")
				},
				Renewed:  func(ctx context.Context, _ mutex.Renewed) { check("renewed", ctx) },
				LeaseEnd: func(ctx context.Context, _ mutex.LeaseEnd) { check("end", ctx) },
			},
		}))
		defer c.Close()

		ctx, cancel := context.WithCancelCause(context.Background())
		err := c.NewMutex("k", mutex.WithTTL(time.Second)).Do(ctx, func(context.Context) error {
			cancel(errors.New("the caller is gone"))
			time.Sleep(time.Second) // renewals
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(seen) < 3 || seen[0] != "renewed" || seen[len(seen)-1] != "end" {
			t.Errorf("observed %v; want renewals, then the end", seen)
		}
		if len(releases) != 1 || releases[0].Value(lockValue{}) != "lock" {
			t.Errorf("Do's release: %d calls, without LockStart's value", len(releases))
		}
	})
}

type releaseSpy struct {
	driver.Locker
	ctxs *[]context.Context
}

func (s releaseSpy) Release(ctx context.Context, key string, owner driver.Owner) error {
	*s.ctxs = append(*s.ctxs, ctx)
	return s.Locker.Release(ctx, key, owner)
}
