package goredis_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// TestBatchedRepliesReachTheirCallers: 64 goroutines of one Locker take,
// inspect and release keys of their own at once, so their calls share
// pipelines; each Inspect must read its own key's record (pid i), and
// another Locker is refused every key while it is held.
func TestBatchedRepliesReachTheirCallers(t *testing.T) {
	ns := startNodes(t, 1)
	l, other := ns.locker(), ns.locker()
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			key := fmt.Sprint("b", i)
			for range 20 {
				owner := driver.NewOwner()
				if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: owner, TTL: ttl, Holder: driver.Holder{PID: 1000 + i}}); err != nil {
					t.Error(err)
					return
				}
				if h, held, err := l.Inspect(t.Context(), key); err != nil || !held || h.PID != 1000+i {
					t.Errorf("Inspect %s: pid %d held %v, %v; want pid %d", key, h.PID, held, err, 1000+i)
					return
				}
				if _, err := other.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), TTL: ttl}); !errors.Is(err, driver.ErrLocked) {
					t.Errorf("another Locker's acquire of held %s: %v; want ErrLocked", key, err)
					return
				}
				if err := l.Release(t.Context(), key, owner); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestBatchedCallsLeaveAtTheirDeadline: on a paused server, 32 concurrent
// calls of one Locker (one alone, the others queued behind it) each fail
// with driver.ErrUnavailable within seconds, and Close then leaves no
// goroutine behind (TestCloseLeavesClient's check, here after batches).
func TestBatchedCallsLeaveAtTheirDeadline(t *testing.T) {
	srv := testserver.StartRedis(t, 1)[0]
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, ReadTimeout: 30 * time.Second, MaxRetries: -1})
	defer c.Close()
	l, err := goredis.FromClient(c, redlock.WithNodeTimeout(300*time.Millisecond)).Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	began := time.Now()
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			_, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: fmt.Sprint("d", i), Owner: driver.NewOwner(), TTL: ttl})
			if !errors.Is(err, driver.ErrUnavailable) {
				t.Errorf("Acquire %d on a paused node: %v; want driver.ErrUnavailable", i, err)
			}
		})
	}
	wg.Wait()
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("32 calls on a paused node took %v; want about the node timeout", d)
	}
	srv.Resume()
	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return within 30s")
	}
}
