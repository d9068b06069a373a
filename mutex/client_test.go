package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/mutex"
)

func TestRegisterPanics(t *testing.T) {
	for name, reg := range map[string]func(){
		"nil driver": func() { mutex.Register("nil-driver", nil) },
		"empty name": func() { mutex.Register("", mem.Driver{}) },
		"bad scheme": func() { mutex.Register("Mem+X", mem.Driver{}) },
		"duplicate":  func() { mutex.Register(mem.Name, mem.Driver{}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Register did not panic", name)
				}
			}()
			reg()
		}()
	}
}

var registered sync.Once

func TestSchemesSorted(t *testing.T) {
	registered.Do(func() { // once, whatever -count says: a scheme registers once
		mutex.Register("zz-test-driver", mem.Driver{})
		mutex.Register("aa-test-driver", mem.Driver{})
	})
	got := mutex.Schemes()
	if !slices.IsSorted(got) || !slices.Contains(got, "mem") || !slices.Contains(got, "zz-test-driver") {
		t.Fatalf("Schemes() = %v; want sorted, with mem and the test drivers", got)
	}
}

func TestOpenUnknownScheme(t *testing.T) {
	_, err := mutex.Open("postgress://u:secret@host/db")
	if !errors.Is(err, mutex.ErrInvalid) {
		t.Fatalf("Open = %v; want ErrInvalid", err)
	}
	for _, want := range []string{`"postgress"`, "forgotten import", "mem"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open error %q does not mention %s", err, want)
		}
	}
	for _, dsn := range []string{"postgress://u:secret@host/db", "host=h password=secret", "u:secret@host", "/var/lock/secret"} {
		_, err := mutex.Open(dsn)
		if !errors.Is(err, mutex.ErrInvalid) || strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) = %v; want ErrInvalid, and no part of the DSN but its scheme", dsn, err)
		}
	}
}

// TestOpenByScheme: the URL's scheme picks the driver, in any case.
func TestOpenByScheme(t *testing.T) {
	for _, dsn := range []string{"mem://open-by-scheme", "MEM://open-by-scheme", "mem:open-by-scheme"} {
		c, err := mutex.Open(dsn)
		if err != nil {
			t.Fatalf("Open(%q): %v", dsn, err)
		}
		l, err := c.NewMutex("k").TryLock(context.Background())
		if err != nil {
			t.Fatalf("Open(%q): TryLock: %v", dsn, err)
		}
		l.Unlock(context.Background())
		c.Close()
	}
}

func TestOpenIsLazyAndPingChecks(t *testing.T) {
	var connects int
	conn := countingConnector{Connector: mem.FromTable(mem.NewTable()), n: &connects}
	c := mutex.NewClient(conn)
	defer c.Close()
	if connects != 0 {
		t.Fatalf("OpenConnector connected %d times; want lazily", connects)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewMutex("k").TryLock(context.Background()); err != nil {
		t.Fatal(err)
	}
	if connects != 1 {
		t.Fatalf("connected %d times; want once", connects)
	}
}

type countingConnector struct {
	driver.Connector
	n *int
}

func (c countingConnector) Connect(ctx context.Context) (driver.Locker, error) {
	*c.n++
	return c.Connector.Connect(ctx)
}

func TestFencingUnsupported(t *testing.T) {
	c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { return noFencing{next} },
	}))
	defer c.Close()
	_, err := c.NewMutex("k", mutex.WithFencing()).TryLock(context.Background())
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "fencing") {
		t.Fatalf("TryLock with WithFencing = %v; want errors.ErrUnsupported naming fencing", err)
	}
	l, err := c.NewMutex("k").TryLock(context.Background())
	if err != nil || l.Token() != 0 {
		t.Fatalf("TryLock without fencing: token %v, %v; want 0, nil", l.Token(), err)
	}
}

// noFencing is a driver that cannot fence.
type noFencing struct{ driver.Locker }

func (l noFencing) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	if req.Fencing {
		return driver.Grant{}, driver.ErrUnimplemented
	}
	g, err := l.Locker.Acquire(ctx, req)
	g.Token = 0
	return g, err
}

// TestMiddlewareOrder: the first middleware listed is outermost, and
// observers see a Lock's start and end and the lease's end.
func TestMiddlewareOrder(t *testing.T) {
	var trail []string
	mw := func(name string) mutex.Middleware {
		return mutex.Middleware{
			Wrap: func(next driver.Locker, info mutex.Info) driver.Locker {
				return tracer{Locker: next, name: name, trail: &trail}
			},
			Observer: &mutex.Observer{
				LockStart: func(ctx context.Context, ev mutex.LockStart) context.Context {
					trail = append(trail, name+" lock-start "+ev.Driver)
					return ctx
				},
				LockDone: func(ctx context.Context, ev mutex.LockDone) {
					trail = append(trail, name+" lock-done "+ev.Key)
				},
				LeaseEnd: func(_ context.Context, ev mutex.LeaseEnd) { trail = append(trail, name+" lease-end") },
			},
		}
	}
	c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithMiddleware(mw("outer"), mw("inner")))
	defer c.Close()
	l, err := c.NewMutex("k").TryLock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock(context.Background())
	want := []string{
		"outer lock-start mem", "inner lock-start mem",
		"outer acquire", "inner acquire",
		"inner lock-done k", "outer lock-done k",
		"outer lease-end", "inner lease-end",
		"outer release", "inner release",
	}
	if !slices.Equal(trail, want) {
		t.Fatalf("trail:\n%s\nwant:\n%s", strings.Join(trail, "\n"), strings.Join(want, "\n"))
	}
}

type tracer struct {
	driver.Locker
	name  string
	trail *[]string
}

func (l tracer) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	*l.trail = append(*l.trail, l.name+" acquire")
	return l.Locker.Acquire(ctx, req)
}

func (l tracer) Release(ctx context.Context, key string, owner driver.Owner) error {
	*l.trail = append(*l.trail, l.name+" release")
	return l.Locker.Release(ctx, key, owner)
}

func TestNamedTablesShared(t *testing.T) {
	a, _ := mutex.Open("mem://TestNamedTablesShared")
	b, _ := mutex.Open("mem://TestNamedTablesShared")
	other, _ := mutex.Open("mem://TestNamedTablesShared-other")
	defer a.Close()
	defer b.Close()
	defer other.Close()
	ctx := context.Background()
	l, err := a.NewMutex("k").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.NewMutex("k").TryLock(ctx); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("same DSN: %v; want ErrLocked", err)
	}
	l2, err := other.NewMutex("k").TryLock(ctx)
	if err != nil {
		t.Fatalf("another DSN's table: %v; want its own free key", err)
	}
	l2.Unlock(ctx)
	l.Unlock(ctx)
}

func TestLockCancelCause(t *testing.T) {
	c := mutex.NewClient(mem.FromTable(mem.NewTable()))
	defer c.Close()
	held, err := c.NewMutex("k").TryLock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock(context.Background())
	shutdown := errors.New("shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(shutdown)
	_, err = c.NewMutex("k").Lock(ctx)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, shutdown) {
		t.Fatalf("Lock = %v; want context.Canceled and the cause", err)
	}
}

// TestLostBeforeLockReturns: a driver that reports the grant lost before
// Acquire has even returned (the session died at once) yields an error, not
// a lease that is already gone.
func TestLostBeforeLockReturns(t *testing.T) {
	table := mem.NewTable()
	c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
			return lostAtOnce{next, table, new(atomic.Bool)}
		},
	}))
	defer c.Close()
	l, err := c.NewMutex("k").TryLock(context.Background())
	if !errors.Is(err, mutex.ErrLockLost) || l != nil {
		t.Fatalf("TryLock = %v, %v; want no lease and ErrLockLost", l, err)
	}
	l2, err := c.NewMutex("k").TryLock(context.Background()) // the key is not stuck in the client
	if err != nil {
		t.Fatalf("TryLock after: %v", err)
	}
	l2.Unlock(context.Background())
}

// lostAtOnce drops the first grant it makes as soon as it is made.
type lostAtOnce struct {
	driver.Locker
	table *mem.Table
	done  *atomic.Bool
}

func (l lostAtOnce) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	g, err := l.Locker.Acquire(ctx, req)
	if err == nil && !l.done.Swap(true) {
		l.table.Drop(req.Key) // calls req.OnLost
	}
	return g, err
}

// TestLockWaitsOutUnavailable: Lock keeps trying, with the same owner,
// while the backend is out of reach, and finds the grant an attempt made
// whose reply was lost; nothing releases it behind its back. TryLock fails.
func TestLockWaitsOutUnavailable(t *testing.T) {
	releases.Store(0)
	table := mem.NewTable()
	var failures atomic.Int32
	failures.Store(3)
	c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { return flaky{next, &failures} },
	}))
	defer c.Close()
	l, err := c.NewMutex("k").Lock(context.Background())
	if err != nil {
		t.Fatalf("Lock through transient failures: %v", err)
	}
	if tok, _ := table.Holder("k"); tok != l.Token() || releases.Load() != 0 {
		t.Fatalf("table holds token %d for the lease's %d after %d releases; want no release while Lock retries", tok, l.Token(), releases.Load())
	}
	if c.Close(); l.Err() == nil {
		t.Fatal("Close did not end the lease") // Close waits for background releases, if any
	}
	if tok, _ := table.Holder("k"); tok != 0 {
		t.Fatalf("Close left the key held (token %d)", tok)
	}

	failures.Store(1)
	c2 := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { return flaky{next, &failures} },
	}))
	defer c2.Close()
	if _, err := c2.NewMutex("k").TryLock(context.Background()); !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("TryLock with the backend out of reach: %v; want ErrUnavailable", err)
	}
}

// flaky takes the key, then says the backend was unreachable, while
// failures lasts.
type flaky struct {
	driver.Locker
	failures *atomic.Int32
}

var releases atomic.Int32

func (l flaky) Release(ctx context.Context, key string, owner driver.Owner) error {
	releases.Add(1)
	return l.Locker.Release(ctx, key, owner)
}

func (l flaky) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	g, err := l.Locker.Acquire(ctx, req)
	if l.failures.Add(-1) >= 0 {
		return driver.Grant{}, fmt.Errorf("reply lost: %w", driver.ErrUnavailable)
	}
	return g, err
}
