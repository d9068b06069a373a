package pgsuite

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/chaos"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Settings of the clients behind the silent proxy: the documented bounds
// are about two heartbeats of package mutex (two and a half after the last
// verification) for a loss, and the statement timeout plus half a second
// (the reply deadline) for any one wait on a session.
const (
	silentStmt  = 3 * time.Second
	silentBeat  = 100 * time.Millisecond
	silentReply = silentStmt + 500*time.Millisecond
	// slack allows for a loaded machine; it is well below silentStmt, so
	// that an Unlock ended by the statement deadline, not by its context,
	// fails the test.
	silentSlack = 1500 * time.Millisecond
)

// ClusterSilentPeer: a server that stops answering while TCP is still
// acknowledged (a proxy in Blackhole mode: its kernel acknowledges, nothing
// is forwarded) is given up on time (issue 12, item 1): every lease on it
// is reported lost within about three heartbeats and a half of the cut
// (its verifications go unanswered), an Unlock returns when its context
// ends (200 ms) with an error matching it, Close returns within the reply
// deadline, and once the partition heals another client takes every key;
// on an application's pool, none of the sessions given up is handed out
// again.
func ClusterSilentPeer(t *testing.T, c Client) {
	pg := testserver.StartPGCluster(t, testserver.PGClusterOptions{})
	p, err := chaos.NewProxy(pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	u, err := url.Parse(pg.DSN("", nil))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	ns := Namespace(t)
	opts := []postgres.Option{postgres.WithNamespace(ns), postgres.WithStatementTimeout(silentStmt)}
	// The clients share one Open: on an application's pool, no session
	// given up must go back to it (checked once the partition heals).
	connect, borrow := c.Open(t, u.String())
	open := func(heartbeat time.Duration) *mutex.Client {
		mc := mutex.NewClient(connect(opts...), mutex.WithHeartbeat(heartbeat))
		t.Cleanup(func() { mc.Close() })
		return mc
	}
	ctx := t.Context()
	// c3's lease must outlive the cut until its Unlock: it is verified
	// seldom.
	c1, c2, c3 := open(silentBeat), open(silentBeat), open(mutex.MaxHeartbeat)
	lock := func(c *mutex.Client, key string) *mutex.Lease {
		t.Helper()
		l, err := c.NewMutex(key).TryLock(ctx)
		if err != nil {
			t.Fatalf("TryLock %s: %v", key, err)
		}
		return l
	}
	a, b := lock(c1, "a"), lock(c3, "b")
	lock(c2, "c")
	admin := OpenDB(t, pg.DSN("", nil))
	sessions := []int{HolderPID(t, admin, ns, "a"), HolderPID(t, admin, ns, "b"), HolderPID(t, admin, ns, "c")}

	p.SetMode(chaos.Blackhole, 0, 0)
	cut := time.Now()
	healed := false
	heal := func() {
		if !healed {
			healed = true
			p.SetMode(chaos.Pass, 0, 0)
		}
	}
	t.Cleanup(heal)
	time.Sleep(3 * silentBeat) // verifications are now waiting on the silent server

	closeStart := time.Now()
	closed := make(chan struct{})
	go func() {
		c2.Close()
		close(closed)
	}()

	uctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	unlocked := make(chan error, 1)
	start := time.Now()
	go func() { unlocked <- b.Unlock(uctx) }()
	select {
	case err := <-unlocked:
		took := time.Since(start)
		t.Logf("Unlock with a 200ms context: %v after %v", err, took.Round(time.Millisecond))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Unlock on a silent server: %v; want an error matching context.DeadlineExceeded", err)
		}
	case <-time.After(200*time.Millisecond + silentSlack):
		t.Errorf("Unlock with a 200ms context has not returned after %v", time.Since(start).Round(time.Millisecond))
	}

	// Two and a half heartbeats after the last verification, which may
	// have been one before the cut.
	lossBound := 3*silentBeat + silentBeat/2
	select {
	case <-a.Done():
		t.Logf("loss reported %v after the cut (bound %v): %v", time.Since(cut).Round(time.Millisecond), lossBound, a.Err())
		if !errors.Is(a.Err(), mutex.ErrLockLost) {
			t.Errorf("Err = %v; want ErrLockLost", a.Err())
		}
	case <-time.After(time.Until(cut.Add(lossBound + silentSlack))):
		t.Errorf("loss not reported %v after the cut; the bound is %v (Err = %v)", time.Since(cut).Round(time.Millisecond), lossBound, a.Err())
	}

	closeBound := silentReply
	select {
	case <-closed:
		t.Logf("Close took %v (bound %v)", time.Since(closeStart).Round(time.Millisecond), closeBound)
	case <-time.After(time.Until(closeStart.Add(closeBound + silentSlack))):
		t.Errorf("Close has not returned %v after the cut; the bound is %v", time.Since(cut).Round(time.Millisecond), closeBound)
	}

	heal()
	other := mutex.NewClient(c.Connect(t, pg.DSN("", nil), postgres.WithNamespace(ns)))
	defer other.Close()
	for _, key := range []string{"a", "b", "c"} {
		lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		l, err := other.NewMutex(key).Lock(lctx)
		cancel()
		if err != nil {
			t.Errorf("another client, after the partition healed: Lock %s: %v", key, err)
			continue
		}
		l.Unlock(ctx)
	}
	if borrow == nil {
		return
	}
	// The sessions given up were closed, not handed back to the pool.
	pids, err := borrow(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if slices.Contains(sessions, pid) {
			t.Errorf("the pool handed out a lock session given up on the silent server (backend %d)", pid)
		}
	}
}

// ClusterSilentPeerAtConnect: a server that accepts the connection and
// then says nothing fails the first session (Connect, through Ping) within
// the reply deadline, with an error matching driver.ErrUnavailable: an
// outage, which Lock waits out. (An application's pool may have no
// connect timeout of its own.)
func ClusterSilentPeerAtConnect(t *testing.T, c Client) {
	pg := testserver.StartPGCluster(t, testserver.PGClusterOptions{})
	p, err := chaos.NewProxy(pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	p.SetMode(chaos.Blackhole, 0, 0)
	u, err := url.Parse(pg.DSN("", nil))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	const stmt = 500 * time.Millisecond
	conn := c.Connect(t, u.String(), postgres.WithStatementTimeout(stmt))
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		l, err := conn.Connect(context.Background())
		if err == nil {
			l.Close()
		}
		done <- err
	}()
	bound := stmt + 500*time.Millisecond // the reply deadline
	select {
	case err := <-done:
		t.Logf("Connect failed after %v (bound %v): %v", time.Since(start).Round(time.Millisecond), bound, err)
		if !errors.Is(err, driver.ErrUnavailable) || errors.Is(err, driver.ErrDenied) {
			t.Errorf("Connect to a silent server: %v; want an error matching driver.ErrUnavailable only", err)
		}
	case <-time.After(bound + silentSlack):
		t.Errorf("Connect to a silent server has not returned after %v; the bound is %v", time.Since(start).Round(time.Millisecond), bound)
	}
}
