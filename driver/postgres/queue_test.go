package postgres

import (
	"context"
	"database/sql"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// queued counts the live queue rows of key in namespace ns.
func queued(t *testing.T, db *sql.DB, ns, key string) int {
	t.Helper()
	var n int
	err := db.QueryRow(`SELECT count(*) FROM `+QueueTable+` WHERE key_id = $1 AND deadline > now()`, KeyID(ns, key)).Scan(&n)
	if err != nil && !strings.Contains(err.Error(), "does not exist") {
		t.Fatal(err)
	}
	return n
}

// lockAsync runs m.Lock(ctx) and sends its lease (or error) on the channel
// returned.
func lockAsync(ctx context.Context, m *mutex.Mutex) <-chan *mutex.Lease {
	got := make(chan *mutex.Lease, 1)
	go func() {
		l, err := m.Lock(ctx)
		if err != nil {
			l = nil
		}
		got <- l
	}()
	return got
}

// Waiters of several clients are served in the order they arrived, and
// the queue stores the key's id, never the key.
func TestQueueFIFOThroughMutex(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	const key, n = "customer-Quixote/secret", 5
	holder, _ := testClient(t, dsn, ns)
	lease, err := holder.NewMutex(key).TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var waits []<-chan *mutex.Lease
	for i := range n {
		c, _ := testClient(t, dsn, ns)
		waits = append(waits, lockAsync(t.Context(), c.NewMutex(key)))
		waitFor(t, "the waiter's queue row", func() bool { return queued(t, db, ns, key) == i+1 })
	}
	var leak int
	db.QueryRow(`SELECT count(*) FROM `+QueueTable+` q WHERE strpos(q::text, $1) > 0`, "Quixote").Scan(&leak)
	if leak != 0 {
		t.Errorf("%d queue rows carry the key's text", leak)
	}
	if err := lease.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, w := range waits {
		select {
		case l := <-w:
			if l == nil {
				t.Fatalf("waiter %d: Lock failed", i+1)
			}
			for j, o := range waits[i+1:] {
				select {
				case <-o:
					t.Fatalf("waiter %d served before waiter %d, which arrived first", i+j+2, i+1)
				default:
				}
			}
			if err := l.Unlock(t.Context()); err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("waiter %d not served within 30s", i+1)
		}
	}
}

// A Lock whose ctx ends leaves the queue: the next waiter is served at the
// release, without waiting out the place of the one that gave up; and a
// TryLock is refused while a waiter is queued, even when the key is free
// for a moment.
func TestQueueCancelledWaiterLeaves(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	const key = "k"
	holder, _ := testClient(t, dsn, ns)
	lease, err := holder.NewMutex(key).TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := testClient(t, dsn, ns)
	ctx, cancel := context.WithCancel(t.Context())
	gaveUp := lockAsync(ctx, b.NewMutex(key))
	waitFor(t, "b queued", func() bool { return queued(t, db, ns, key) == 1 })
	c, _ := testClient(t, dsn, ns)
	next := lockAsync(t.Context(), c.NewMutex(key))
	waitFor(t, "c queued", func() bool { return queued(t, db, ns, key) == 2 })
	stranger, _ := testClient(t, dsn, ns)
	if _, err := stranger.NewMutex(key).TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock while waiters are queued: %v; want ErrLocked", err)
	}
	cancel()
	if l := <-gaveUp; l != nil {
		t.Fatal("a cancelled Lock returned a lease")
	}
	waitFor(t, "b out of the queue", func() bool { return queued(t, db, ns, key) == 1 })
	start := time.Now()
	if err := lease.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-next:
		if l == nil {
			t.Fatal("c: Lock failed")
		}
		t.Logf("c served %v after the release", time.Since(start).Round(time.Millisecond))
		l.Unlock(t.Context())
	case <-time.After(driver.QueueHold / 2):
		t.Fatalf("c not served within %v of the release: the place of the waiter that gave up held it up", driver.QueueHold/2)
	}
}

// A waiter whose server connections are all killed (its LISTEN connection
// and its lock sessions) is still served once the key is released.
func TestQueueWaiterSessionsKilled(t *testing.T) {
	dsn, db := adminDB(t)
	ns := namespace(t)
	const key = "k"
	holder, _ := testClient(t, dsn, ns)
	lease, err := holder.NewMutex(key).TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w, wl := testClient(t, dsn, ns)
	got := lockAsync(t.Context(), w.NewMutex(key))
	waitFor(t, "the waiter queued and listening", func() bool { return queued(t, db, ns, key) == 1 && wl.listenerUp() })
	var killed int
	if err := db.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, wl.appName).Scan(&killed); err != nil || killed == 0 {
		t.Fatalf("killed %d backends of the waiter: %v", killed, err)
	}
	if err := lease.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got:
		if l == nil {
			t.Fatal("waiter: Lock failed")
		}
		l.Unlock(t.Context())
	case <-time.After(30 * time.Second):
		t.Fatal("waiter not served within 30s")
	}
}

// Exclusion with the queue: 3 clients x 10 goroutines take one key in turn;
// a gauge of holders never passes 1 and a counter updated by read, yield,
// write loses nothing (run under -race). Closing the clients leaves no
// goroutine of theirs behind.
func TestQueueExclusion(t *testing.T) {
	dsn, _ := adminDB(t)
	ns := namespace(t)
	before := runtime.NumGoroutine()
	var (
		counter  int
		holders  int
		maxHeld  int
		wg       sync.WaitGroup
		clients  []*mutex.Client
		failures = make(chan error, 30)
	)
	const perG = 5
	for range 3 {
		conn, err := NewConnector(dsn, WithNamespace(ns))
		if err != nil {
			t.Fatal(err)
		}
		c := mutex.NewClient(conn, mutex.WithHeartbeat(testHeartbeat))
		clients = append(clients, c)
		for range 10 {
			wg.Go(func() {
				m := c.NewMutex("counter")
				for range perG {
					l, err := m.Lock(t.Context())
					if err != nil {
						failures <- err
						return
					}
					holders++
					maxHeld = max(maxHeld, holders)
					v := counter
					runtime.Gosched()
					time.Sleep(time.Millisecond)
					counter = v + 1
					holders--
					if err := l.Unlock(t.Context()); err != nil {
						failures <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	if counter != 3*10*perG || maxHeld != 1 {
		t.Fatalf("counter %d (want %d), at most %d holders at once (want 1)", counter, 3*10*perG, maxHeld)
	}
	for _, c := range clients {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
