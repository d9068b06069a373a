//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
)

// wait bounds every wait on a signal: generous, for a busy 2-core machine.
const wait = 30 * time.Second

// connect returns a Locker on dir, closed when t ends.
func connect(t *testing.T, dir string) driver.Locker {
	t.Helper()
	return open(t, file.FromDir(dir))
}

// open connects c, and closes the Locker when t ends.
func open(t *testing.T, c driver.Connector) driver.Locker {
	t.Helper()
	l, err := c.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func acquire(t *testing.T, l driver.Locker, key string, owner driver.Owner) driver.Grant {
	t.Helper()
	g, err := l.Acquire(context.Background(), driver.AcquireRequest{Key: key, Owner: owner, Fencing: true})
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	return g
}

func TestAcquireRelease(t *testing.T) {
	ctx := context.Background()
	l := connect(t, t.TempDir())
	a, b := driver.NewOwner(), driver.NewOwner()

	g := acquire(t, l, "k", a)
	if g.Token != 1 || g.Validity != 0 {
		t.Fatalf("first grant = %+v, want token 1, validity 0", g)
	}
	if again := acquire(t, l, "k", a); again != g {
		t.Fatalf("same owner again = %+v, want the existing grant %+v", again, g)
	}
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: b}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("other owner: %v, want ErrLocked", err)
	}
	if err := l.Release(ctx, "k", b); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release by other owner: %v, want ErrNotHeld", err)
	}
	if err := l.Release(ctx, "other", a); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release of a key never held: %v, want ErrNotHeld", err)
	}
	if err := l.Release(ctx, "k", a); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx, "k", a); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("second Release: %v, want ErrNotHeld", err)
	}
	if g := acquire(t, l, "k", b); g.Token != 2 {
		t.Fatalf("token after re-acquire = %d, want 2", g.Token)
	}
}

func TestContextDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	if _, err := file.FromDir(dir).Connect(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Connect: %v, want context.Canceled", err)
	}
	l := connect(t, dir)
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()}); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire: %v, want context.Canceled", err)
	}
	if err := l.Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Ping: %v, want context.Canceled", err)
	}
}

// TestRenewVerifies: a Renew element with TTL 0 verifies a grant: nil while
// the lock file is the one this Locker locked, ErrNotHeld once it was
// removed or replaced, or for an owner that does not hold the key.
func TestRenewVerifies(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := connect(t, dir)
	held, removed, replaced := driver.NewOwner(), driver.NewOwner(), driver.NewOwner()
	acquire(t, l, "held", held)
	acquire(t, l, "removed", removed)
	acquire(t, l, "replaced", replaced)
	removeLockFile(t, dir, "removed")
	replaceLockFile(t, dir, "replaced")

	batch := []driver.Renewal{
		{Key: "held", Owner: held},
		{Key: "removed", Owner: removed},
		{Key: "replaced", Owner: replaced},
		{Key: "held", Owner: driver.NewOwner()},
		{Key: "never", Owner: held},
	}
	l.Renew(ctx, batch)
	if r := batch[0]; r.Err != nil || r.Validity != 0 {
		t.Errorf("Renew of a held key = %v, %v; want nil, validity 0", r.Validity, r.Err)
	}
	for _, r := range batch[1:] {
		if !errors.Is(r.Err, driver.ErrNotHeld) {
			t.Errorf("Renew %q by %v: %v; want ErrNotHeld", r.Key, r.Owner, r.Err)
		}
	}
	// The lost grants' descriptors are closed: the new files are free.
	for _, key := range []string{"removed", "replaced"} {
		acquire(t, connect(t, dir), key, driver.NewOwner())
	}
	if err := l.Release(ctx, "held", held); err != nil {
		t.Fatal(err)
	}
	l.Renew(ctx, batch[:1])
	if !errors.Is(batch[0].Err, driver.ErrNotHeld) {
		t.Errorf("Renew after Release: %v; want ErrNotHeld", batch[0].Err)
	}
}

// Two Lockers have separate open file descriptions, whose flocks conflict
// even in one process: they stand for two processes.
func TestTwoLockersExclude(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l1, l2 := connect(t, dir), connect(t, dir)
	a, b := driver.NewOwner(), driver.NewOwner()

	acquire(t, l1, "k", a)
	if _, err := l2.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: b}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("second Locker: %v, want ErrLocked", err)
	}
	// Not even the same owner gets it through another Locker.
	if _, err := l2.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: a}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("same owner, second Locker: %v, want ErrLocked", err)
	}
	if err := l2.Release(ctx, "k", a); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release through a Locker that does not hold it: %v, want ErrNotHeld", err)
	}
	if err := l1.Release(ctx, "k", a); err != nil {
		t.Fatal(err)
	}
	if g := acquire(t, l2, "k", b); g.Token != 2 {
		t.Fatalf("token = %d, want 2", g.Token)
	}
}

func TestTokensIncreaseAcrossLockers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, file.FileName("k"))
	var last uint64
	for i := range 3 {
		l := connect(t, dir)
		for range 3 {
			o := driver.NewOwner()
			g := acquire(t, l, "k", o)
			if g.Token <= last {
				t.Fatalf("Locker %d: token %d after %d", i, g.Token, last)
			}
			last = g.Token
			if err := l.Release(ctx, "k", o); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("lock file gone after Release: %v", err)
			}
		}
		if i == 1 {
			acquire(t, l, "k", driver.NewOwner()) // released by Close
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("lock file gone after Close: %v", err)
		}
	}
	if last != 10 {
		t.Fatalf("last token = %d, want 10", last)
	}
}

func TestCorruptToken(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := connect(t, dir)
	path := filepath.Join(dir, file.FileName("k"))
	if err := os.WriteFile(path, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()})
	if err == nil || errors.Is(err, driver.ErrLocked) {
		t.Fatalf("Acquire with a corrupt token: %v, want an error", err)
	}
	if err := os.WriteFile(path, []byte("41\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The failed attempt left the flock free.
	if g := acquire(t, connect(t, dir), "k", driver.NewOwner()); g.Token != 42 {
		t.Fatalf("token = %d, want 42", g.Token)
	}
}

func TestEvilKeysStayInDir(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	dir := filepath.Join(root, "locks")
	l := connect(t, dir)
	keys := []string{
		"../escape", "../../escape", "/etc/passwd", "..", ".", "a/../../b", "a\x00b", "\x00",
		"ключ/../..", strings.Repeat("../", 1365), strings.Repeat("é", 2048), "-rf", ".hidden",
	}
	var want []string
	for _, key := range keys {
		o := driver.NewOwner()
		acquire(t, l, key, o)
		if err := l.Release(ctx, key, o); err != nil {
			t.Fatal(err)
		}
		want = append(want, file.FileName(key))
	}
	slices.Sort(want)
	var got []string
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("files in %s = %q, want %q", dir, got, want)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 1 {
		t.Fatalf("files outside the lock directory: %v", entries)
	}
}

// removeLockFile removes key's lock file from under its holder.
func removeLockFile(t *testing.T, dir, key string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, file.FileName(key))); err != nil {
		t.Fatal(err)
	}
}

// replaceLockFile renames another file onto key's lock file.
func replaceLockFile(t *testing.T, dir, key string) {
	t.Helper()
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, filepath.Join(dir, file.FileName(key))); err != nil {
		t.Fatal(err)
	}
}

// TestOnLostFromNotify: on Linux the Locker's inotify watch reports a
// removed or replaced lock file to OnLost at once, before any Renew.
func TestOnLostFromNotify(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("OnLost needs inotify; elsewhere Renew finds the loss")
	}
	for _, vanish := range []struct {
		how string
		do  func(t *testing.T, dir, key string)
	}{{"removed", removeLockFile}, {"replaced", replaceLockFile}} {
		t.Run(vanish.how, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			l := connect(t, dir)
			lost := make(chan error, 2)
			o := driver.NewOwner()
			req := driver.AcquireRequest{Key: "k", Owner: o, OnLost: func(err error) { lost <- err }}
			if _, err := l.Acquire(ctx, req); err != nil {
				t.Fatal(err)
			}
			acquire(t, l, "other-key", driver.NewOwner()) // not reported
			vanish.do(t, dir, "k")
			select {
			case err := <-lost:
				if !errors.Is(err, driver.ErrNotHeld) || !strings.Contains(err.Error(), "removed or replaced") {
					t.Fatalf("OnLost(%v), want ErrNotHeld saying the file was removed or replaced", err)
				}
			case <-time.After(wait):
				t.Fatal("OnLost not called")
			}
			batch := []driver.Renewal{{Key: "k", Owner: o}}
			l.Renew(ctx, batch)
			if !errors.Is(batch[0].Err, driver.ErrNotHeld) {
				t.Fatalf("Renew after loss: %v, want ErrNotHeld", batch[0].Err)
			}
			if err := l.Release(ctx, "k", o); !errors.Is(err, driver.ErrNotHeld) {
				t.Fatalf("Release after loss: %v, want ErrNotHeld", err)
			}
			// The new file is free: the lost grant's fds were closed.
			acquire(t, l, "k", driver.NewOwner())
			if len(lost) != 0 {
				t.Fatal("OnLost called twice")
			}
		})
	}
}

// A release by another Locker, which is as good as another process: the
// wake-up travels through inotify.
func TestWatchWakesOnReleaseByOtherLocker(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("cross-process wake-ups need inotify")
	}
	ctx := context.Background()
	dir := t.TempDir()
	holder, waiter := connect(t, dir), connect(t, dir)
	o := driver.NewOwner()
	acquire(t, holder, "k", o)
	acquire(t, holder, "mark", o)

	wake, mark := make(chan struct{}, 1), make(chan struct{}, 1)
	stop, err := waiter.Watch("k", driver.NewOwner(), wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	stopMark, err := waiter.Watch("mark", driver.NewOwner(), mark)
	if err != nil {
		t.Fatal(err)
	}
	defer stopMark()

	// The waiter's own failed attempts wake nobody: inotify delivers events
	// in order, so once the release of "mark" is seen, an event caused by
	// the attempts would have been seen as well.
	for range 3 {
		if _, err := waiter.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()}); !errors.Is(err, driver.ErrLocked) {
			t.Fatalf("waiter: %v, want ErrLocked", err)
		}
	}
	if err := holder.Release(ctx, "mark", o); err != nil {
		t.Fatal(err)
	}
	select {
	case <-mark:
	case <-time.After(wait):
		t.Fatal("no wake-up for the release of mark")
	}
	select {
	case <-wake:
		t.Fatal("failed attempts woke the waiter")
	default:
	}

	if err := holder.Release(ctx, "k", o); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(wait):
		t.Fatal("no wake-up for the release of k")
	}
	w := driver.NewOwner()
	acquire(t, waiter, "k", w)

	// After stop (idempotent), no more wake-ups.
	stop()
	stop()
	if err := waiter.Release(ctx, "k", w); err != nil {
		t.Fatal(err)
	}
	if err := holder.Release(ctx, "k", o); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatal(err)
	}
}

func TestWatchWakesOnOwnRelease(t *testing.T) {
	ctx := context.Background()
	l := connect(t, t.TempDir())
	o := driver.NewOwner()
	acquire(t, l, "k", o)
	wake := make(chan struct{}) // unbuffered: the send must not block
	stop, err := l.Watch("k", driver.NewOwner(), wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	buffered := make(chan struct{}, 1)
	stop2, err := l.Watch("k", driver.NewOwner(), buffered)
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	if err := l.Release(ctx, "k", o); err != nil {
		t.Fatal(err)
	}
	select {
	case <-buffered:
	case <-time.After(wait):
		t.Fatal("no wake-up")
	}
}

func TestCloseReleasesAndStops(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	base := runtime.NumGoroutine()

	l, err := file.FromDir(dir).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"a", "b", "c"} {
		acquire(t, l, key, driver.NewOwner())
	}
	wake := make(chan struct{}, 1)
	if _, err := l.Watch("a", driver.NewOwner(), wake); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake: // waiters are woken to learn of the Close
	case <-time.After(wait):
		t.Fatal("Close did not wake the waiter")
	}

	other := connect(t, dir)
	for _, key := range []string{"a", "b", "c"} {
		acquire(t, other, key, driver.NewOwner())
	}
	other.Close()

	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	for _, err := range []error{
		l.Ping(ctx),
		l.Release(ctx, "a", driver.NewOwner()),
		func() error {
			_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "a", Owner: driver.NewOwner()})
			return err
		}(),
		func() error { _, err := l.Watch("a", driver.NewOwner(), wake); return err }(),
	} {
		if !errors.Is(err, driver.ErrClosed) {
			t.Errorf("after Close: %v, want ErrClosed", err)
		}
	}

	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPing(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "locks")
	l := connect(t, dir)
	if err := l.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 { // root writes anywhere
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		if err := l.Ping(ctx); err == nil {
			t.Error("Ping on a read-only directory succeeded")
		}
		os.Chmod(dir, 0o755)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx); err == nil {
		t.Error("Ping on a removed directory succeeded")
	}
}

func TestConnectNotADirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := file.FromDir(path).Connect(context.Background()); err == nil {
		t.Fatal("Connect on a regular file succeeded")
	}
	if _, err := file.FromDir("").Connect(context.Background()); !errors.Is(err, driver.ErrInvalid) {
		t.Fatalf("Connect with no directory: %v, want ErrInvalid", err)
	}
}

func TestPlantedFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := connect(t, dir)
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, file.FileName("sym"))); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, file.FileName("fifo")), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"sym", "fifo"} {
		if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner()}); err == nil {
			t.Errorf("Acquire through a planted %s succeeded", key)
		}
	}
	if data, err := os.ReadFile(victim); err != nil || string(data) != "precious\n" {
		t.Fatalf("symlink target changed: %q, %v", data, err)
	}
}
