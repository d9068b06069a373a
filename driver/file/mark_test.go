//go:build linux

package file_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
)

// links is the link count of key's lock file: 2 while its queue is marked.
func links(t *testing.T, dir, key string) uint64 {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(dir, file.FileName(key)))
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Nlink)
}

// checkQueue fails t unless key's queue is marked exactly when want, and
// its directory exists exactly then.
func checkQueue(t *testing.T, dir, key string, want bool, when string) {
	t.Helper()
	n := links(t, dir, key)
	_, err := os.Lstat(queueDirOf(dir, key))
	if got := n > 1; got != want || (err == nil) != want {
		t.Fatalf("%s: lock file has %d links, queue directory: %v; want queued %v", when, n, err, want)
	}
}

// TestQueueMark: the lock file is marked (a second link) while anyone
// waits, and unmarked, with its queue directory gone, once nobody does:
// after the last waiter leaves, is served, or dies.
func TestQueueMark(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	holder := connect(t, dir)
	h := driver.NewOwner()
	acquire(t, holder, "k", h)
	checkQueue(t, dir, "k", false, "held, nobody waiting")

	a := newQueuer(t, dir, "k")
	checkQueue(t, dir, "k", true, "one waiter")
	b := newQueuer(t, dir, "k")
	if err := a.l.Release(ctx, "k", a.owner); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatal(err)
	}
	checkQueue(t, dir, "k", true, "one waiter left, one waits")
	if err := b.l.Release(ctx, "k", b.owner); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatal(err)
	}
	checkQueue(t, dir, "k", false, "the last waiter left")

	b.try(t, "k", false)
	checkQueue(t, dir, "k", true, "queued again")
	if err := holder.Release(ctx, "k", h); err != nil {
		t.Fatal(err)
	}
	b.try(t, "k", true)
	checkQueue(t, dir, "k", false, "the last waiter served")
	if err := b.l.Release(ctx, "k", b.owner); err != nil {
		t.Fatal(err)
	}
	checkQueue(t, dir, "k", false, "released")

	if testing.Short() {
		return
	}
	acquire(t, holder, "k", h)
	cmd, _, stdout := helper(t, "queue", "MUTEXKIT_FILE_DIR="+dir, "MUTEXKIT_FILE_KEY=k")
	readLine(t, stdout, "queued")
	checkQueue(t, dir, "k", true, "a child waits")
	cmd.Process.Kill()
	cmd.Wait()
	// The release finds the dead waiter, passes it over and clears the queue.
	if err := holder.Release(ctx, "k", h); err != nil {
		t.Fatal(err)
	}
	checkQueue(t, dir, "k", false, "the only waiter was killed, the key released")
}

// lockQueueDir takes the flock of key's queue directory, as a process
// taking a place holds it, until the returned func.
func lockQueueDir(t *testing.T, dir, key string) func() {
	t.Helper()
	d, err := os.Open(queueDirOf(dir, key))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return func() { d.Close() }
}

// TestQueueMarkOrdered: the mark is removed only under the queue
// directory's flock, which a process taking a place holds: a last waiter
// that leaves while another process holds it leaves the mark (an empty
// marked queue costs a look, a waiter unmarked would be passed over), and
// the next attempt that looks removes it.
func TestQueueMarkOrdered(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	holder := connect(t, dir)
	h := driver.NewOwner()
	acquire(t, holder, "k", h)
	a := newQueuer(t, dir, "k")
	unlock := lockQueueDir(t, dir, "k")
	if err := a.l.Release(ctx, "k", a.owner); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatal(err)
	}
	checkQueue(t, dir, "k", true, "the last waiter left while the queue was locked")

	// A place cannot be taken meanwhile: the attempt is refused, unqueued.
	late := connect(t, dir)
	lateO := driver.NewOwner()
	if _, err := late.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: lateO, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt while the queue is locked: %v, want ErrLocked", err)
	}
	names, err := os.ReadDir(queueDirOf(dir, "k"))
	if err != nil || len(names) != 1 || names[0].Name() != "link" {
		t.Fatalf("queue holds %v (%v), want the mark alone", names, err)
	}
	unlock()

	stranger := connect(t, dir)
	if _, err := stranger.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("TryLock of a held key: %v", err)
	}
	checkQueue(t, dir, "k", false, "an attempt looked at the empty marked queue")
	if _, err := late.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: lateO, Wait: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatal(err)
	}
	checkQueue(t, dir, "k", true, "a waiter took a place")
}

// TestQueueUnmarkedNotRead: with nobody waiting (the lock file unmarked),
// attempts and releases never look at the queue: a file planted where the
// queue directory would be is not even read.
func TestQueueUnmarkedNotRead(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := connect(t, dir)
	if err := os.WriteFile(queueDirOf(dir, "k"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		o := driver.NewOwner()
		acquire(t, l, "k", o)
		if err := l.Release(ctx, "k", o); err != nil {
			t.Fatal(err)
		}
	}
	if links(t, dir, "k") != 1 {
		t.Fatal("the lock file is marked")
	}
}

// TestQueueMarkRace: Lockers taking places and leaving concurrently, the
// last ones out clearing the queue as others come: whenever a waiter's
// entry is in the queue, the lock file is marked. Checked under the queue
// directory's flock, under which no entry is made and the mark stays
// (entries may only go): the link count read first, then the listing.
func TestQueueMarkRace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	dir := t.TempDir()
	holder := connect(t, dir)
	acquire(t, holder, "k", driver.NewOwner())
	var wg sync.WaitGroup
	for range 4 {
		l := connect(t, dir)
		wg.Go(func() {
			for ctx.Err() == nil {
				o := driver.NewOwner()
				_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: o, Wait: true})
				if !errors.Is(err, driver.ErrLocked) && !(ctx.Err() != nil && errors.Is(err, ctx.Err())) {
					t.Errorf("waiting attempt: %v", err)
					return
				}
				l.Release(ctx, "k", o)
			}
		})
	}
	checks, marked := 0, 0
	for ctx.Err() == nil {
		d, err := os.Open(queueDirOf(dir, "k"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			fi, err1 := os.Lstat(queueDirOf(dir, "k"))
			own, err2 := d.Stat()
			if err1 == nil && err2 == nil && os.SameFile(fi, own) {
				n := links(t, dir, "k")
				names, err := d.Readdirnames(-1)
				if err != nil { // removed under its flock, say
					t.Fatalf("list a queue under its flock: %v", err)
				}
				for _, name := range names {
					if strings.HasSuffix(name, ".w") && n < 2 {
						t.Fatalf("entry %s in an unmarked queue (%v)", name, names)
					}
				}
				checks++
				if n > 1 {
					marked++
				}
			}
		}
		d.Close()
		time.Sleep(50 * time.Microsecond)
	}
	wg.Wait()
	t.Logf("%d checks, %d marked", checks, marked)
}

// TestQueueMarkReplacedLockFile: a mark left linking a lock file that was
// since replaced (by hand) is made again on the lock file in place when a
// waiter queues, so that the key is kept for it.
func TestQueueMarkReplacedLockFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	holder := connect(t, dir)
	h := driver.NewOwner()
	acquire(t, holder, "k", h)
	if err := holder.Release(ctx, "k", h); err != nil {
		t.Fatal(err)
	}
	lockPath := filepath.Join(dir, file.FileName("k"))
	if err := os.Mkdir(queueDirOf(dir, "k"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(lockPath, filepath.Join(queueDirOf(dir, "k"), "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lockPath+".new", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(lockPath+".new", lockPath); err != nil {
		t.Fatal(err)
	}
	if links(t, dir, "k") != 1 {
		t.Fatal("the new lock file is marked")
	}

	acquire(t, holder, "k", h)
	w := newQueuer(t, dir, "k")
	checkQueue(t, dir, "k", true, "a waiter queued behind a stale mark")
	if err := holder.Release(ctx, "k", h); err != nil {
		t.Fatal(err)
	}
	stranger := connect(t, dir)
	if _, err := stranger.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("TryLock of a key kept for a waiter: %v, want ErrLocked", err)
	}
	w.try(t, "k", true)
	checkQueue(t, dir, "k", false, "the waiter served")
}

// TestQueueNoLinks: on a filesystem that makes no hard links (link(2) fails
// with EPERM, as on vfat; played here), a waiting attempt is not queued and
// leaves no queue directory behind, and its Locker does not try again, on
// any key. A link that fails otherwise (EACCES) leaves nothing behind
// either, and is tried again.
func TestQueueNoLinks(t *testing.T) {
	calls := 0
	errno := syscall.EPERM
	file.SetLink(t, func(oldname, newname string) error {
		calls++
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: errno}
	})
	ctx := context.Background()
	dir := t.TempDir()
	holder := connect(t, dir)
	acquire(t, holder, "k", driver.NewOwner())
	acquire(t, holder, "k2", driver.NewOwner())
	attempt := func(l driver.Locker, key string, o driver.Owner) {
		t.Helper()
		if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: o, Wait: true}); !errors.Is(err, driver.ErrLocked) {
			t.Fatalf("waiting attempt: %v, want ErrLocked", err)
		}
		if _, err := os.Lstat(queueDirOf(dir, key)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("queue directory after a failed mark: %v, want none", err)
		}
		if links(t, dir, key) != 1 {
			t.Fatal("lock file marked")
		}
	}
	w, o := connect(t, dir), driver.NewOwner()
	for range 2 {
		attempt(w, "k", o)
		attempt(w, "k2", driver.NewOwner())
	}
	if calls != 1 {
		t.Fatalf("%d links tried, want 1: a filesystem without links is found once per Locker", calls)
	}

	errno = syscall.EACCES
	w2, o2 := connect(t, dir), driver.NewOwner()
	attempt(w2, "k", o2)
	attempt(w2, "k", o2)
	if calls != 3 {
		t.Fatalf("%d links tried, want 3: a link refused for another cause is tried again", calls)
	}
}

// TestQueueLockWaitCtx: a waiting attempt that waits for the queue's flock
// (another process holds it, taking a place) gives up when ctx ends, with
// ctx's error.
func TestQueueLockWaitCtx(t *testing.T) {
	dir := t.TempDir()
	holder := connect(t, dir)
	acquire(t, holder, "k", driver.NewOwner())
	newQueuer(t, dir, "k")
	unlock := lockQueueDir(t, dir, "k")
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	late := connect(t, dir)
	_, err := late.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), Wait: true})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting attempt while the queue is locked, ctx ending: %v, want DeadlineExceeded", err)
	}
	checkKeyFree(t, "wait for a queue's flock", err)
}

// TestQueueMarkReplacedWhileQueued: a lock file replaced (by hand) while
// owners wait leaves the mark on the old file; the next attempt of a
// waiter that sees the new one unmarked marks it again, so that the key is
// kept for the head once released.
func TestQueueMarkReplacedWhileQueued(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	holder := connect(t, dir)
	acquire(t, holder, "k", driver.NewOwner())
	w := newQueuer(t, dir, "k")
	lockPath := filepath.Join(dir, file.FileName("k"))
	if err := os.WriteFile(lockPath+".new", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(lockPath+".new", lockPath); err != nil {
		t.Fatal(err)
	}
	s1, o1 := connect(t, dir), driver.NewOwner()
	acquire(t, s1, "k", o1) // the new file, unmarked: nobody seems to wait
	w.try(t, "k", false)
	checkQueue(t, dir, "k", true, "a waiter's attempt saw the new lock file")
	if err := s1.Release(ctx, "k", o1); err != nil {
		t.Fatal(err)
	}
	s2 := connect(t, dir)
	if _, err := s2.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("TryLock of a key kept for a waiter: %v, want ErrLocked", err)
	}
	w.try(t, "k", true)
}
