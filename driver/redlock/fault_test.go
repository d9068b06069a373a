package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// client opens a mutex client of the cluster, closed when the test ends.
func (c *cluster) client(opts ...string) *mutex.Client {
	c.t.Helper()
	cl := mutex.NewClient(c.connector(opts...))
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// exclusive runs goroutines on several clients that take one key in turn
// and update a counter by read-yield-write: an overlap loses an update.
func exclusive(t *testing.T, c *cluster, clients, perClient, rounds int) {
	t.Helper()
	var holders, maxHolders, counter atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients*perClient)
	for range clients {
		cl := c.client()
		for range perClient {
			wg.Go(func() {
				m := cl.NewMutex("shared", mutex.WithTTL(2*time.Second))
				for range rounds {
					l, err := m.Lock(t.Context())
					if err != nil {
						errs <- err
						return
					}
					n := holders.Add(1)
					for cur := maxHolders.Load(); n > cur && !maxHolders.CompareAndSwap(cur, n); cur = maxHolders.Load() {
					}
					v := counter.Load()
					runtime.Gosched()
					counter.Store(v + 1)
					holders.Add(-1)
					if err := l.Unlock(t.Context()); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Lock/Unlock: %v", err)
	}
	if m := maxHolders.Load(); m > 1 {
		t.Errorf("%d holders at once", m)
	}
	if got, want := counter.Load(), int64(clients*perClient*rounds); got != want {
		t.Errorf("counter %d after %d critical sections: overlap lost updates", got, want)
	}
}

// TestMinorityDown: with 2 of 5 nodes killed or paused, locking works and
// stays exclusive.
func TestMinorityDown(t *testing.T) {
	for _, fault := range []string{"killed", "paused"} {
		t.Run(fault, func(t *testing.T) {
			c := startCluster(t, 5)
			for _, s := range c.servers[3:] {
				if fault == "killed" {
					s.Kill()
				} else {
					s.Pause()
				}
			}
			rounds := 10
			if fault == "paused" {
				rounds = 4 // each call waits out the paused nodes' timeout
			}
			exclusive(t, c, 3, 2, rounds)
		})
	}
}

// TestQuorumDown: with 3 of 5 nodes down, TryLock fails at once with an
// error naming them, and never ErrLocked.
func TestQuorumDown(t *testing.T) {
	for _, fault := range []string{"killed", "paused"} {
		t.Run(fault, func(t *testing.T) {
			c := startCluster(t, 5)
			down := c.servers[2:]
			for _, s := range down {
				if fault == "killed" {
					s.Kill()
				} else {
					s.Pause()
				}
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.client().NewMutex("k", mutex.WithTTL(2*time.Second)).TryLock(ctx)
			t.Logf("TryLock with 3 of 5 %s: %v after %v", fault, err, time.Since(start))
			switch {
			case err == nil:
				t.Fatal("TryLock succeeded without a quorum")
			case ctx.Err() != nil:
				t.Fatalf("TryLock waited for its context: %v", err)
			case errors.Is(err, mutex.ErrLocked):
				t.Fatalf("TryLock: %v; a quorum down is not ErrLocked", err)
			case !errors.Is(err, driver.ErrUnavailable):
				t.Errorf("TryLock: %v; want driver.ErrUnavailable", err)
			}
			for _, s := range down {
				if !strings.Contains(err.Error(), s.Addr()) {
					t.Errorf("error does not name the unreachable node %s", s.Addr())
				}
			}
			for _, s := range c.servers[:2] {
				if strings.Contains(err.Error(), s.Addr()) {
					t.Errorf("error names the reachable node %s", s.Addr())
				}
			}
			if err := c.client().Ping(ctx); !errors.Is(err, driver.ErrUnavailable) {
				t.Errorf("Ping: %v; want driver.ErrUnavailable", err)
			}
		})
	}
}

// TestFlushMajority: a lease whose key is flushed from a majority is
// reported lost by its next renewal.
func TestFlushMajority(t *testing.T) {
	c := startCluster(t, 5)
	l, err := c.client().NewMutex("flushed", mutex.WithTTL(time.Second)).Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c.heldEverywhere(t, "flushed") // a late grant would come back after the flush
	for i := range 3 {
		if _, err := c.do(i, "FLUSHALL"); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("loss not reported within 10s of flushing 3 of 5 nodes")
	}
	if !errors.Is(l.Err(), mutex.ErrLockLost) {
		t.Fatalf("Err: %v; want ErrLockLost", l.Err())
	}
}

// TestRestartedEmpty: one node restarted empty costs nothing (four still
// hold the key); a majority restarted empty loses the lease, found at the
// next renewal. Inside that window another client could take the key: the
// delayed-restart rule of docs/REDIS.md is what prevents it.
func TestRestartedEmpty(t *testing.T) {
	c := startCluster(t, 5)
	const ttl = time.Second
	l, err := c.client().NewMutex("restart", mutex.WithTTL(ttl)).Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c.heldEverywhere(t, "restart") // else a restart could leave it on a minority (docs/REDIS.md, assumption 3)
	c.servers[0].Restart()
	other := c.client()
	for range 3 { // several renewals later, still held and still exclusive
		if _, err := other.NewMutex("restart", mutex.WithTTL(ttl)).TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("TryLock with one node restarted empty: %v; want ErrLocked", err)
		}
		time.Sleep(ttl / 2)
	}
	if l.Err() != nil {
		t.Fatalf("lease with one node restarted empty: %v", l.Err())
	}
	c.servers[1].Restart()
	c.servers[2].Restart()
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("loss not reported within 10s of restarting 3 of 5 nodes empty")
	}
	if !errors.Is(l.Err(), mutex.ErrLockLost) {
		t.Fatalf("Err: %v; want ErrLockLost", l.Err())
	}
}

// TestPing: eviction policies are reported; a refused CONFIG is not.
func TestPing(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error; "" for none
	}{
		{nil, ""},
		{[]string{"--maxmemory-policy", "allkeys-lru"}, "maxmemory-policy is allkeys-lru"},
		{[]string{"--maxmemory-policy", "volatile-ttl"}, "maxmemory-policy is volatile-ttl"},
		{[]string{"--maxmemory-policy", "allkeys-lru", "--rename-command", "CONFIG", ""}, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c := newCluster(t, startRedisArgs(t, 1, tc.args...))
			err := c.client().Ping(t.Context())
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Ping: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Ping: %v; want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestPasswordNeverShown: errors of a client with a password, wrong or
// unreachable, never carry it.
func TestPasswordNeverShown(t *testing.T) {
	const pass = "pa55-W0rd-xyzzy"
	servers := startRedisArgs(t, 1, "--requirepass", pass)
	addr := servers[0].Addr()
	for _, dsn := range []string{
		"redis://:" + pass + "-wrong@" + addr,
		"redis://user:" + pass + "@" + addr,
		"redis://:" + pass + "@127.0.0.1:1",
		"redis://:" + pass + "@127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
	} {
		cl, err := mutex.Open(dsn)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer cl.Close()
		errs := []error{cl.Ping(t.Context())}
		_, err = cl.NewMutex("k").TryLock(t.Context())
		errs = append(errs, err)
		for _, err := range errs {
			if err == nil {
				t.Errorf("no error with a bad password or host")
			} else if strings.Contains(err.Error(), pass) {
				t.Errorf("error carries the password: %v", err)
			}
		}
	}
	cl, err := mutex.Open("redis://:" + pass + "@" + addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	l, err := cl.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatalf("TryLock with the right password: %v", err)
	}
	l.Unlock(t.Context())
}

// TestWatchAfterRestart: the subscription comes back after its node
// restarts, and wakes the waiter again when a release keeps the key for
// it.
func TestWatchAfterRestart(t *testing.T) {
	c := startCluster(t, 1)
	holder, waiter := c.locker(), c.locker()
	h, w := driver.NewOwner(), driver.NewOwner()
	wake := make(chan struct{}, 1)
	stop, err := waiter.Watch("w", w, wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	<-wake // confirmed
	c.servers[0].Restart()
	select { // confirmed again after the reconnection
	case <-wake:
	case <-time.After(20 * time.Second):
		t.Fatal("no resubscription within 20s of a restart")
	}
	// The pool's idle connection died with the server: the call takes a
	// fresh one (idle.go).
	if _, err := acquire(t, holder, "w", h); err != nil {
		t.Fatal(err)
	}
	mustWaitLocked(t, waiter, "w", w)
	if err := holder.Release(t.Context(), "w", h); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up after a release, following a restart")
	}
}

func TestCloseLeavesNoGoroutine(t *testing.T) {
	c := startCluster(t, 3)
	other := c.locker() // holds a key l's waiter queues behind
	before := runtime.NumGoroutine()
	l, err := c.connector().Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := acquire(t, l, fmt.Sprint(i), driver.NewOwner()); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Watch(fmt.Sprint(i), driver.NewOwner(), make(chan struct{}, 1)); err != nil {
			t.Fatal(err)
		}
	}
	o := driver.NewOwner() // a waiter of l's, queued, then woken

	if _, err := acquire(t, other, "w", o); err != nil {
		t.Fatal(err)
	}
	mustWaitLocked(t, l, "w", driver.NewOwner())
	if err := other.Release(t.Context(), "w", o); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // Close released what it held
		if got := c.owner(i, "0"); got != "" {
			t.Errorf("node %d still holds a key after Close", i)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := acquire(t, l, "x", driver.NewOwner()); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Acquire after Close: %v; want ErrClosed", err)
	}
}

// TestLockWaitsForQuorum: with 3 of 5 nodes paused, Lock keeps waiting
// (it does not fail on the unreachable nodes), and takes the key once they
// are back.
func TestLockWaitsForQuorum(t *testing.T) {
	c := startCluster(t, 5)
	down := c.servers[2:]
	for _, s := range down {
		s.Pause()
	}
	client := c.client()
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		l, err := client.NewMutex("k", mutex.WithTTL(2*time.Second)).Lock(ctx)
		if err == nil {
			err = l.Unlock(ctx)
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("Lock returned with a quorum down: %v; want it to wait", err)
	case <-time.After(time.Second):
	}
	for _, s := range down {
		s.Resume()
	}
	if err := <-got; err != nil {
		t.Fatalf("Lock after the nodes came back: %v", err)
	}
}

// TestHeldMinorityAndNodesDown: an attempt that failed because nodes
// failed, with the key held elsewhere on too few nodes to refuse it, is
// driver.ErrUnavailable (Lock waits it out, TryLock says the nodes are
// unreachable), not ErrLocked; held on so many nodes that no quorum is
// left, it is ErrLocked whatever the others said.
func TestHeldMinorityAndNodesDown(t *testing.T) {
	c := startCluster(t, 5)
	l := c.locker("timeout=1s")
	c.plant(t, "one", driver.NewOwner(), 0)
	c.plant(t, "two", driver.NewOwner(), 0, 1)
	c.plant(t, "three", driver.NewOwner(), 0, 1, 2)
	c.servers[3].Kill()
	c.servers[4].Kill()
	for _, tc := range []struct {
		key  string
		held int
	}{{"one", 1}, {"two", 2}} {
		_, err := acquire(t, l, tc.key, driver.NewOwner())
		switch {
		case errors.Is(err, driver.ErrLocked):
			t.Errorf("held on %d of 5, 2 nodes down: %v; want not ErrLocked: the nodes down decided", tc.held, err)
		case !errors.Is(err, driver.ErrUnavailable):
			t.Errorf("held on %d of 5, 2 nodes down: %v; want driver.ErrUnavailable", tc.held, err)
		case !strings.Contains(err.Error(), c.servers[3].Addr()) || !strings.Contains(err.Error(), fmt.Sprintf("held elsewhere on %d", tc.held)):
			t.Errorf("held on %d of 5, 2 nodes down: %v; want the nodes down named and the holders counted", tc.held, err)
		}
	}
	if _, err := acquire(t, l, "three", driver.NewOwner()); !errors.Is(err, driver.ErrLocked) {
		t.Errorf("held on 3 of 5, 2 nodes down: %v; want ErrLocked", err)
	}
	_, err := c.client().NewMutex("one").TryLock(t.Context())
	if errors.Is(err, mutex.ErrLocked) || !errors.Is(err, mutex.ErrUnavailable) {
		t.Errorf("TryLock held on 1 of 5, 2 nodes down: %v; want mutex.ErrUnavailable", err)
	}
}
