package mutex_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/mutex"
)

// BenchmarkDriverFloor is the bare mem driver: one Acquire and one Release,
// what TryLock+Unlock cannot do with less.
func BenchmarkDriverFloor(b *testing.B) {
	ctx := context.Background()
	l, err := mem.FromTable(mem.NewTable()).Connect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	owner := driver.NewOwner()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: owner, TTL: mutex.DefaultTTL}); err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx, "k", owner); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTryLockUnlock is the same through this package.
func BenchmarkTryLockUnlock(b *testing.B) {
	benchTryLockUnlock(b, 0)
}

// BenchmarkTryLockUnlockWith1000Held adds 1,000 leases held (and renewed)
// by the same client.
func BenchmarkTryLockUnlockWith1000Held(b *testing.B) {
	benchTryLockUnlock(b, 1000)
}

func benchTryLockUnlock(b *testing.B, others int) {
	ctx := context.Background()
	c := mutex.NewClient(mem.FromTable(mem.NewTable()))
	defer c.Close()
	for i := range others {
		if _, err := c.NewMutex(fmt.Sprint("other/", i)).TryLock(ctx); err != nil {
			b.Fatal(err)
		}
	}
	m := c.NewMutex("k")
	b.ReportAllocs()
	for b.Loop() {
		l, err := m.TryLock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
