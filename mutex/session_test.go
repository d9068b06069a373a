package mutex_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/mutex"
)

// sessionLocker turns mem's grants into session grants (Validity 0), as
// PostgreSQL's and the file driver's are, and verifies them when asked
// (Renew with TTL 0): a key in dead is gone, and while hang is set every
// verification waits for its ctx, as on a server that went silent.
type sessionLocker struct {
	driver.Locker
	table    *mem.Table
	mu       sync.Mutex
	dead     map[string]bool
	hang     atomic.Bool
	verifies atomic.Int32 // Renew calls
}

func (l *sessionLocker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	req.OnLost = nil // no early reports: Renew alone must find losses
	req.TTL = time.Hour
	g, err := l.Locker.Acquire(ctx, req)
	g.Validity = 0
	if err == nil {
		l.mu.Lock()
		delete(l.dead, req.Key)
		l.mu.Unlock()
	}
	return g, err
}

func (l *sessionLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	l.verifies.Add(1)
	if l.hang.Load() {
		<-ctx.Done()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range batch {
		switch {
		case batch[i].TTL != 0:
			batch[i].Err = errors.New("a session grant was asked to extend")
		case ctx.Err() != nil:
			batch[i].Err = ctx.Err()
		case l.dead[batch[i].Key]:
			batch[i].Err = driver.ErrNotHeld
		default:
			batch[i].Err = nil
		}
	}
}

// kill ends the session of key's grant: the key is free on the backend,
// and the next verification finds it gone.
func (l *sessionLocker) kill(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dead[key] = true
	l.table.Drop(key)
}

func sessionClient(t *testing.T, heartbeat time.Duration) (*mutex.Client, *sessionLocker) {
	t.Helper()
	sl := &sessionLocker{dead: make(map[string]bool), table: mem.NewTable()}
	c := mutex.NewClient(mem.FromTable(sl.table), mutex.WithHeartbeat(heartbeat), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { sl.Locker = next; return sl },
	}))
	t.Cleanup(func() { c.Close() })
	return c, sl
}

// TestSessionLeasesVerified: package mutex verifies session grants every
// heartbeat, all of a client's in one driver call, and keeps them while
// the driver confirms them.
func TestSessionLeasesVerified(t *testing.T) {
	const hb = 50 * time.Millisecond
	c, sl := sessionClient(t, hb)
	ctx := context.Background()
	var leases []*mutex.Lease
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		l, err := c.NewMutex(k).TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	time.Sleep(10 * hb)
	for _, l := range leases {
		if err := l.Err(); err != nil {
			t.Fatalf("lease %s: %v; want held", l.Key(), err)
		}
		if !l.Expires().IsZero() {
			t.Fatalf("a session lease expires at %v; want never", l.Expires())
		}
	}
	// About one call per heartbeat for all eight; one per lease would be 80.
	if n := sl.verifies.Load(); n < 2 || n > 20 {
		t.Fatalf("%d verifications in 10 heartbeats of 8 leases; want about 10 (batched)", n)
	}
	for _, l := range leases {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSessionLossFound: a session that died is found by the next
// verification, without the driver reporting it on its own.
func TestSessionLossFound(t *testing.T) {
	const hb = 50 * time.Millisecond
	c, sl := sessionClient(t, hb)
	l, err := c.NewMutex("k").Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	sl.kill("k")
	select {
	case <-l.Done():
	case <-time.After(20 * hb):
		t.Fatal("a dead session's lease not reported lost within 20 heartbeats")
	}
	if took := time.Since(killed); took > 10*hb {
		t.Errorf("loss reported %v after the session died; want within about a heartbeat (%v)", took, hb)
	}
	if !errors.Is(l.Err(), mutex.ErrLockLost) || !errors.Is(l.Err(), mutex.ErrNotHeld) {
		t.Fatalf("Err = %v; want ErrLockLost (and the driver's ErrNotHeld)", l.Err())
	}
}

// TestSessionUnverifiedIsLost: a session that cannot be verified (the
// server went silent) is reported lost after two and a half heartbeats.
func TestSessionUnverifiedIsLost(t *testing.T) {
	const hb = 50 * time.Millisecond
	c, sl := sessionClient(t, hb)
	l, err := c.NewMutex("k").Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	silent := time.Now()
	sl.hang.Store(true)
	select {
	case <-l.Done():
	case <-time.After(40 * hb):
		t.Fatal("an unverifiable session lease not reported lost within 40 heartbeats")
	}
	if took := time.Since(silent); took < 2*hb {
		t.Errorf("lost %v after verifications began to hang; want no sooner than two heartbeats", took)
	}
	if !errors.Is(l.Err(), mutex.ErrLockLost) {
		t.Fatalf("Err = %v; want ErrLockLost", l.Err())
	}
}

// TestHeartbeatBounds: a heartbeat out of range is an invalid option,
// reported by the client's operations.
func TestHeartbeatBounds(t *testing.T) {
	for _, d := range []time.Duration{0, time.Millisecond, 2 * time.Minute} {
		c := mutex.NewClient(mem.FromTable(mem.NewTable()), mutex.WithHeartbeat(d))
		if _, err := c.NewMutex("k").TryLock(context.Background()); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("WithHeartbeat(%v): TryLock = %v; want ErrInvalid", d, err)
		}
		if err := c.Ping(context.Background()); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("WithHeartbeat(%v): Ping = %v; want ErrInvalid", d, err)
		}
		c.Close()
	}
}

// TestRelockAfterLoss: once Done reports a loss, the client has let go of
// the key: a TryLock right away does not find it held by the lost lease.
func TestRelockAfterLoss(t *testing.T) {
	c, sl := sessionClient(t, 10*time.Millisecond)
	ctx := context.Background()
	for i := range 50 {
		l, err := c.NewMutex("k").TryLock(ctx)
		if err != nil {
			t.Fatalf("round %d: TryLock right after the loss: %v", i, err)
		}
		sl.kill("k")
		<-l.Done() // closed by the renewer's goroutine
	}
}

// slowGrant makes every session grant take a while to arrive, as a first
// connection over TLS or a wait for a free session does.
type slowGrant struct {
	*sessionLocker
	delay time.Duration
}

func (l slowGrant) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	time.Sleep(l.delay)
	return l.sessionLocker.Acquire(ctx, req)
}

// TestSlowSessionGrantKept: a session grant that took longer than the
// loss window to arrive is not lost on arrival: its verification window
// starts when it is granted.
func TestSlowSessionGrantKept(t *testing.T) {
	const hb = 10 * time.Millisecond
	sl := &sessionLocker{dead: make(map[string]bool), table: mem.NewTable()}
	c := mutex.NewClient(mem.FromTable(sl.table), mutex.WithHeartbeat(hb), mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
			sl.Locker = next
			return slowGrant{sl, 10 * hb}
		},
	}))
	defer c.Close()
	l, err := c.NewMutex("k").TryLock(context.Background())
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	time.Sleep(hb / 2)
	if err := l.Err(); err != nil {
		t.Fatalf("a slow session grant was lost on arrival: %v", err)
	}
	l.Unlock(context.Background())
}
