package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/mutex"
)

// TestNoWatchPolls: a driver that cannot signal releases (Watch is
// ErrUnimplemented, as the contract allows) is polled with backoff, not
// asked again at once after every attempt.
func TestNoWatchPolls(t *testing.T) {
	n, err := attemptsWhileHeld(t, 500*time.Millisecond, func(string, chan<- struct{}) (func(), error) {
		return nil, driver.ErrUnimplemented
	})
	// Backoff from 2 ms doubling to 250 ms: about 10 attempts in 500 ms.
	if n > 40 {
		t.Fatalf("%d attempts in 500 ms against a driver that cannot watch; want backoff (at most 40)", n)
	}
	if !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("Lock = %v; want ErrLocked at the deadline", err)
	}
}

// TestCloseEndsLeasesBeingGranted: a lease whose grant arrives while Close
// runs is never returned held after Close: it is ended, or not returned.
func TestCloseEndsLeasesBeingGranted(t *testing.T) {
	granted := 0
	for round := range 3000 {
		c := mutex.NewClient(mem.FromTable(mem.NewTable()))
		c.Ping(context.Background())
		var wg sync.WaitGroup
		leases := make(chan *mutex.Lease, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if l, err := c.NewMutex(fmt.Sprint("k", i)).TryLock(context.Background()); err == nil {
					leases <- l
				}
			}()
		}
		time.Sleep(time.Duration(round%50) * time.Microsecond)
		c.Close()
		wg.Wait()
		close(leases)
		for l := range leases {
			granted++
			select {
			case <-l.Done():
			default:
				t.Fatalf("round %d: a lease TryLock returned is still held after Close returned (Err %v)", round, l.Err())
			}
		}
	}
	t.Logf("%d leases granted around Close, every one ended", granted)
}

// unverifiable turns mem's grants into session grants whose verification
// never succeeds, as with a server that stopped answering, and says when a
// release went through.
type unverifiable struct {
	driver.Locker
	released chan struct{}
}

func (l unverifiable) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	req.TTL = time.Hour
	g, err := l.Locker.Acquire(ctx, req)
	g.Validity = 0
	return g, err
}

func (l unverifiable) Renew(_ context.Context, b []driver.Renewal) {
	for i := range b {
		b[i].Err = driver.ErrUnavailable
	}
}

func (l unverifiable) Release(ctx context.Context, key string, owner driver.Owner) error {
	err := l.Locker.Release(ctx, key, owner)
	if err == nil {
		close(l.released)
	}
	return err
}

// TestUnverifiedLossReleases: a lease given up because it could not be
// verified may still be held on the backend: it is released there, so
// nothing stays held with nobody left to free it.
func TestUnverifiedLossReleases(t *testing.T) {
	ctx := context.Background()
	table := mem.NewTable()
	released := make(chan struct{})
	c := mutex.NewClient(mem.FromTable(table), mutex.WithHeartbeat(20*time.Millisecond), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { return unverifiable{next, released} },
	}))
	defer c.Close()
	l, err := c.NewMutex("k").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-l.Done()
	if !errors.Is(l.Err(), mutex.ErrLockLost) {
		t.Fatalf("Err = %v; want ErrLockLost", l.Err())
	}
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("the lease given up as unverifiable was not released on the backend")
	}
	if _, held := table.Holder("k"); held {
		t.Fatal("the backend still holds the key of a lease given up as unverifiable")
	}
}

// slowConnector connects only when its ctx ends.
type slowConnector struct{ started chan struct{} }

func (c slowConnector) Connect(ctx context.Context) (driver.Locker, error) {
	close(c.started)
	<-ctx.Done()
	return nil, ctx.Err()
}

func (slowConnector) DriverName() string { return "slow" }

// TestCloseEndsConnect: Close does not wait behind a Connect whose caller
// gave it no deadline.
func TestCloseEndsConnect(t *testing.T) {
	sc := slowConnector{make(chan struct{})}
	c := mutex.NewClient(sc)
	locked := make(chan error, 1)
	go func() {
		_, err := c.NewMutex("k").Lock(context.Background())
		locked <- err
	}()
	<-sc.started
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked behind a Connect in flight")
	}
	if err := <-locked; !errors.Is(err, mutex.ErrClosed) {
		t.Fatalf("Lock during Close = %v; want ErrClosed", err)
	}
}
