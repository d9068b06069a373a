//go:build linux

package file_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
	"github.com/mutexkit/mutexkit/mutex"
)

// queuer is one waiting owner on its own Locker (as good as a process of
// its own), watching the key.
type queuer struct {
	l     driver.Locker
	owner driver.Owner
	wake  chan struct{}
	mark  chan struct{} // woken by any release of "mark", after the key's
	stop  func()        // ends the watch of the key, as Lock does when it returns
}

func newQueuer(t *testing.T, dir, key string) *queuer {
	t.Helper()
	q := &queuer{l: connect(t, dir), owner: driver.NewOwner(), wake: make(chan struct{}, 1), mark: make(chan struct{}, 1)}
	q.try(t, key, false)
	stop, err := q.l.Watch(key, q.owner, q.wake)
	if err != nil {
		t.Fatal(err)
	}
	q.stop = stop
	t.Cleanup(stop)
	stopMark, err := q.l.Watch("mark", driver.NewOwner(), q.mark)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopMark)
	return q
}

// try makes a waiting attempt; want says whether it must be granted.
func (q *queuer) try(t *testing.T, key string, want bool) {
	t.Helper()
	_, err := q.l.Acquire(context.Background(), driver.AcquireRequest{Key: key, Owner: q.owner, Wait: true})
	switch {
	case want && err != nil:
		t.Fatalf("waiter at the head: %v, want the key", err)
	case !want && !errors.Is(err, driver.ErrLocked):
		t.Fatalf("waiter not at the head: %v, want ErrLocked", err)
	}
}

func woken(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func await(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatalf("no wake-up: %s", what)
	}
}

// TestQueueFIFO: waiters on Lockers of their own are served in arrival
// order, each release wakes the head of the queue alone, and a key kept for
// the head is refused to everyone else, waiting or not, though it is free.
func TestQueueFIFO(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	holder := connect(t, dir)
	first := driver.NewOwner()
	acquire(t, holder, "k", first)
	const n = 6
	var qs []*queuer
	for range n {
		qs = append(qs, newQueuer(t, dir, "k"))
	}
	stranger := connect(t, dir)

	release := func(l driver.Locker, o driver.Owner) {
		mark := driver.NewOwner()
		acquire(t, holder, "mark", mark)
		if err := l.Release(ctx, "k", o); err != nil {
			t.Fatal(err)
		}
		// Each Locker's inotify events arrive in order: once the release
		// of "mark" is seen, any wake-up the release of "k" caused was too.
		if err := holder.Release(ctx, "mark", mark); err != nil {
			t.Fatal(err)
		}
	}
	prevL, prevO := holder, first
	for r, head := range qs {
		release(prevL, prevO)
		for _, q := range qs[r:] {
			await(t, q.mark, "release of mark")
		}
		if !woken(head.wake) {
			t.Fatalf("round %d: the head of the queue was not woken by the release", r)
		}
		for i, q := range qs[r+1:] {
			if woken(q.wake) {
				t.Fatalf("round %d: waiter %d, behind the head, was woken too", r, r+1+i)
			}
			q.try(t, "k", false) // free, but kept for the head
		}
		for _, wait := range []bool{false, true} {
			if _, err := stranger.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), Wait: wait}); !errors.Is(err, driver.ErrLocked) {
				t.Fatalf("round %d: a newcomer (Wait %v) took the key kept for the head: %v", r, wait, err)
			}
		}
		head.try(t, "k", true)
		prevL, prevO = head.l, head.owner
	}
	if err := prevL.Release(ctx, "k", prevO); err != nil {
		t.Fatal(err)
	}
	// The newcomer who queued in the first round is served last.
}

// TestQueueLeave: a waiter that gives up (Release, as Lock does when its
// ctx ends) leaves the queue; when the key was kept for it, the next waiter
// is woken and served at once.
func TestQueueLeave(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	holder := connect(t, dir)
	h := driver.NewOwner()
	acquire(t, holder, "k", h)
	a, b, c := newQueuer(t, dir, "k"), newQueuer(t, dir, "k"), newQueuer(t, dir, "k")

	// b leaves from the middle: no one is woken, a and c keep their order.
	if err := b.l.Release(ctx, "k", b.owner); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release by a waiter: %v, want ErrNotHeld", err)
	}
	b.stop()
	if err := holder.Release(ctx, "k", h); err != nil {
		t.Fatal(err)
	}
	await(t, a.wake, "a, at the head")
	c.try(t, "k", false) // kept for a

	// a gives up while the key is kept for it: c is woken and served.
	if err := a.l.Release(ctx, "k", a.owner); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release by the head: %v, want ErrNotHeld", err)
	}
	await(t, c.wake, "c, after the head left")
	c.try(t, "k", true)
	if woken(b.wake) {
		t.Fatal("b, who left, was woken")
	}
	if err := c.l.Release(ctx, "k", c.owner); err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Fatalf("lock directory holds %v (%v), want the lock file alone: the empty queue is removed", entries, err)
	}
}

// TestQueueKilledWaiter: a waiter whose process is killed is passed over at
// once: its entry's flock went with it.
func TestQueueKilledWaiter(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	ctx := context.Background()
	env := func(dir string) []string { return []string{"MUTEXKIT_FILE_DIR=" + dir, "MUTEXKIT_FILE_KEY=k"} }

	t.Run("behind a holder", func(t *testing.T) {
		dir := t.TempDir()
		holder := connect(t, dir)
		h := driver.NewOwner()
		acquire(t, holder, "k", h)
		cmd, _, stdout := helper(t, "queue", env(dir)...)
		readLine(t, stdout, "queued")
		b := newQueuer(t, dir, "k")
		cmd.Process.Kill()
		cmd.Wait()
		if err := holder.Release(ctx, "k", h); err != nil {
			t.Fatal(err)
		}
		await(t, b.wake, "the waiter behind a killed one")
		b.try(t, "k", true)
	})

	t.Run("kept for it", func(t *testing.T) {
		dir := t.TempDir()
		holder := connect(t, dir)
		h := driver.NewOwner()
		acquire(t, holder, "k", h)
		cmd, _, stdout := helper(t, "queue", env(dir)...)
		readLine(t, stdout, "queued")
		queued := time.Now()
		b := newQueuer(t, dir, "k")
		if err := holder.Release(ctx, "k", h); err != nil {
			t.Fatal(err)
		}
		b.try(t, "k", false) // kept for the child
		if time.Since(queued) >= driver.QueueHold {
			t.Log("too slow to tell the flock probe from QueueHold; the outcome below is checked all the same")
		}
		cmd.Process.Kill()
		cmd.Wait()
		b.try(t, "k", true) // the first attempt after the death
	})
}

// TestQueueStoppedWaiter: a waiter that lives but stops asking (here a
// stopped process, whose entry stays flocked) keeps its place for
// driver.QueueHold, then is passed over.
func TestQueueStoppedWaiter(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	ctx := context.Background()
	dir := t.TempDir()
	holder := connect(t, dir)
	h := driver.NewOwner()
	acquire(t, holder, "k", h)
	cmd, _, stdout := helper(t, "queue", "MUTEXKIT_FILE_DIR="+dir, "MUTEXKIT_FILE_KEY=k")
	readLine(t, stdout, "queued")
	queued := time.Now()
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	b := newQueuer(t, dir, "k")
	if err := holder.Release(ctx, "k", h); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		_, err := b.l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: b.owner, Wait: true})
		if err == nil {
			break
		}
		if !errors.Is(err, driver.ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("waiter behind a stopped one: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The child touched its entry before it printed: the place lasted
	// QueueHold from then, at least QueueHold less the read's delay.
	if got := time.Since(queued); got < driver.QueueHold-time.Second {
		t.Fatalf("the stopped waiter was passed over after %v, before QueueHold (%v)", got, driver.QueueHold)
	}
}

// TestQueueGaveUpWithoutRelease: a Locker whose waiter stops asking without
// a Release (its Lock gave up, its Release failed) drops the place itself
// after QueueHold, closing the entry, and the next waiter is served.
func TestQueueGaveUpWithoutRelease(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	holder := connect(t, dir)
	h := driver.NewOwner()
	acquire(t, holder, "k", h)
	quitter := newQueuer(t, dir, "k")
	b := newQueuer(t, dir, "k")
	if err := holder.Release(ctx, "k", h); err != nil {
		t.Fatal(err)
	}
	await(t, quitter.wake, "the head")
	// The quitter never tries again: b, polling, keeping its own place, is
	// woken when the quitter's Locker drops the place.
	deadline := time.After(wait)
	for granted := false; !granted; {
		select {
		case <-b.wake:
		case <-time.After(driver.QueueHold / 3):
		case <-deadline:
			t.Fatal("the waiter behind one that gave up was not served")
		}
		_, err := b.l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: b.owner, Wait: true})
		granted = err == nil
		if err != nil && !errors.Is(err, driver.ErrLocked) {
			t.Fatal(err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("lock directory holds %v; want the lock file alone", entries)
	}
	// The quitter's Locker closed its entry too (b's attempts only pass
	// it over).
	for deadline := time.Now().Add(wait); entryFDs(t) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a queue entry is still open after QueueHold without an attempt")
		}
	}
}

// entryFDs counts this process's descriptors open on queue entries.
func entryFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.Contains(target, ".queue/") {
			n++
		}
	}
	return n
}

// TestQueueExclusion: several clients (Lockers) of one directory, many
// goroutines each, all waiting through package mutex and its queue: never
// two in the critical section, and everyone is served.
func TestQueueExclusion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	const clients, goroutines, rounds = 3, 12, 5
	var (
		mu      sync.Mutex
		inside  int
		counter int
		wg      sync.WaitGroup
		errs    = make(chan error, clients*goroutines)
	)
	for range clients {
		c := mutex.NewClient(file.FromDir(dir))
		t.Cleanup(func() { c.Close() })
		for range goroutines {
			wg.Go(func() {
				m := c.NewMutex("shared")
				for range rounds {
					lease, err := m.Lock(ctx)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					inside++
					bad := inside != 1
					mu.Unlock()
					if bad {
						errs <- errors.New("two holders at once")
					}
					counter++ // unguarded: -race reports two holders
					mu.Lock()
					inside--
					mu.Unlock()
					if err := lease.Unlock(ctx); err != nil {
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
		t.Fatal(err)
	}
	if counter != clients*goroutines*rounds {
		t.Fatalf("counter = %d, want %d", counter, clients*goroutines*rounds)
	}
}

// TestQueueCloseLeavesNothing: Close takes the Locker's waiters out of
// their queues, wakes the next, and leaves no goroutine and no descriptor
// behind.
func TestQueueCloseLeavesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	holder := connect(t, dir)
	h := driver.NewOwner()
	acquire(t, holder, "k", h)
	lateL := connect(t, dir)
	if _, err := lateL.Watch("prime", driver.NewOwner(), make(chan struct{}, 1)); err != nil { // starts its inotify reader
		t.Fatal(err)
	}
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)
	l, err := file.FromDir(dir).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		o := driver.NewOwner()
		if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: o, Wait: true}); !errors.Is(err, driver.ErrLocked) {
			t.Fatalf("waiting attempt: %v", err)
		}
		if _, err := l.Watch("k", o, make(chan struct{}, 1)); err != nil {
			t.Fatal(err)
		}
	}
	late, lateO, lateWake := lateL, driver.NewOwner(), make(chan struct{}, 1)
	if _, err := late.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: lateO, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt: %v", err)
	}
	stop, err := late.Watch("k", lateO, lateWake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := holder.Release(ctx, "k", h); err != nil {
		t.Fatal(err)
	}
	await(t, lateWake, "the waiter behind a closed Locker's")
	if _, err := late.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: lateO, Wait: true}); err != nil {
		t.Fatalf("the waiter behind a closed Locker's: %v", err)
	}

	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine() > baseG || openFDs(t) > baseFD+2 { // the lock file late holds; its sweeper ends within a second
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after Close: %d goroutines (%d before), %d fds (%d before)\n%s",
				runtime.NumGoroutine(), baseG, openFDs(t), baseFD, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}

// TestQueueErrorsLeaveKeyOut: a queue directory that cannot be read (here
// a file planted in its place, with the lock file marked as queued by a
// second link) makes attempts fail with an error that names neither the key
// nor its queue.
func TestQueueErrorsLeaveKeyOut(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := connect(t, dir)
	o := driver.NewOwner()
	acquire(t, l, secretKey, o) // makes the lock file
	if err := l.Release(ctx, secretKey, o); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, file.FileName(secretKey)), filepath.Join(dir, "second-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(queueDirOf(dir, secretKey), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := l.Acquire(ctx, driver.AcquireRequest{Key: secretKey, Owner: driver.NewOwner(), Wait: true})
	checkKeyFree(t, "Acquire with a file for a queue", err)
	if !errors.Is(err, syscall.ENOTDIR) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Acquire with a file for a queue: %v; want ENOTDIR naming the directory", err)
	}
}

func queueDirOf(dir, key string) string {
	return filepath.Join(dir, strings.TrimSuffix(file.FileName(key), ".lock")+".queue")
}
