package mysql_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/mysql"
	"github.com/mutexkit/mutexkit/mutex"
)

// The restart's heartbeat and reply deadline: a lease is reported lost
// within restartBound of the server closing its connections (at once on
// SIGTERM): the next verification finds the session closed, or at worst
// waits out the reply deadline.
const (
	restartHeartbeat = 200 * time.Millisecond
	restartReply     = time.Second
	restartBound     = restartHeartbeat + restartReply
)

// A server restart (SIGTERM, then started again on the same port and data
// directory), at once or after a second down: every lease of the old
// client is reported lost within restartBound (plus a second of slack for
// a loaded machine), its Unlock says so, two Locks waiting in the server
// during the restart are both served after it (they wait out
// ErrUnavailable while it is down, as a TryLock then gets it), never two
// holders at once, and a new client, and the old one, take keys again.
func TestServerRestart(t *testing.T) {
	t.Run("at-once", func(t *testing.T) { testRestart(t, 0) })
	t.Run("down=1s", func(t *testing.T) { testRestart(t, time.Second) })
}

func testRestart(t *testing.T, pause time.Duration) {
	srv := startPrivateServer(t)
	ns := uniqueNamespace(t)
	open := func() *mutex.Client {
		conn, err := mysql.NewConnector(srv.dsn(), mysql.WithNamespace(ns), mysql.WithStatementTimeout(restartReply))
		if err != nil {
			t.Fatal(err)
		}
		c := mutex.NewClient(conn, mutex.WithHeartbeat(restartHeartbeat))
		t.Cleanup(func() { c.Close() })
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()

	old := open()
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	held := make([]*mutex.Lease, len(keys))
	for i, k := range keys {
		l, err := old.NewMutex(k).TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held[i] = l
	}

	// holders counts the new holders of each key; overlapOld, the grants made
	// before the old holder's loss was reported (after the fact: allowed).
	var holders [6]atomic.Int32
	var overlapOld atomic.Int32
	hold := func(i int, l *mutex.Lease) {
		select {
		case <-held[i].Done():
		default:
			overlapOld.Add(1)
		}
		if n := holders[i].Add(1); n != 1 {
			t.Errorf("key %s: %d holders at once", keys[i], n)
		}
		time.Sleep(50 * time.Millisecond)
		holders[i].Add(-1)
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock of %s: %v", keys[i], err)
		}
	}

	// Two clients wait for k0 in the server.
	admin := srv.admin("test")
	defer admin.Close()
	var wg sync.WaitGroup
	for range 2 {
		w := open()
		before := serverWaiters(t, admin)
		wg.Go(func() {
			l, err := w.NewMutex(keys[0]).Lock(ctx)
			if err != nil {
				t.Errorf("Lock waiting through the restart: %v", err)
				return
			}
			hold(0, l)
		})
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if len(serverWaiters(t, admin)) > len(before) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a Lock did not wait in the server within 5s")
			}
		}
	}

	// Each loss, timed from the SIGTERM.
	lost := make([]time.Duration, len(keys))
	var losses sync.WaitGroup
	sent := time.Now()
	for i, l := range held {
		losses.Go(func() {
			select {
			case <-l.Done():
				lost[i] = time.Since(sent)
			case <-ctx.Done():
			}
		})
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Since(sent)
	if pause > 0 {
		if _, err := old.NewMutex("again").TryLock(ctx); !errors.Is(err, mutex.ErrUnavailable) {
			t.Errorf("TryLock while the server is down: %v; want ErrUnavailable", err)
		}
		time.Sleep(pause)
	}
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	up := time.Since(sent)
	losses.Wait()
	var worst time.Duration
	for i, l := range held {
		switch {
		case lost[i] == 0:
			t.Fatalf("lease of %s not reported lost within 15s of the restart", keys[i])
		case !errors.Is(l.Err(), mutex.ErrLockLost):
			t.Errorf("Err of %s: %v; want ErrLockLost", keys[i], l.Err())
		}
		worst = max(worst, lost[i])
		if err := l.Unlock(ctx); !errors.Is(err, mutex.ErrLockLost) {
			t.Errorf("old Unlock of %s: %v; want ErrLockLost", keys[i], err)
		}
	}
	t.Logf("after SIGTERM: server exited %v, answered again %v; leases lost at %v (bound %v)",
		down.Round(time.Millisecond), up.Round(time.Millisecond), lost, restartBound)
	if worst > restartBound+time.Second {
		t.Errorf("a lease was reported lost %v after SIGTERM; bound %v and 1s of slack", worst, restartBound)
	}

	// A new client takes every key (k0 once the waiters are done), and the
	// old client takes keys again on new sessions.
	fresh := open()
	for i, k := range keys {
		wg.Go(func() {
			l, err := fresh.NewMutex(k).Lock(ctx)
			if err != nil {
				t.Errorf("new client's Lock of %s after the restart: %v", k, err)
				return
			}
			hold(i, l)
		})
	}
	wg.Wait()
	l, err := old.NewMutex("again").TryLock(ctx)
	if err != nil {
		t.Fatalf("old client's TryLock after the restart: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if n := overlapOld.Load(); n > 0 {
		t.Logf("%d grants came before the old holder's loss was reported (after the fact, as Loss says)", n)
	}
}
