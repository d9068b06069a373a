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

func connect(t *testing.T, dir string, opts ...file.Option) driver.Locker {
	t.Helper()
	l, err := file.FromDir(dir, opts...).Connect(context.Background())
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

func TestAcquireInvalid(t *testing.T) {
	ctx := context.Background()
	l := connect(t, t.TempDir())
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "", Owner: driver.NewOwner()}); !errors.Is(err, driver.ErrInvalid) {
		t.Errorf("empty key: %v, want ErrInvalid", err)
	}
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k"}); !errors.Is(err, driver.ErrInvalid) {
		t.Errorf("zero owner: %v, want ErrInvalid", err)
	}
	if _, err := l.Watch("k", nil); !errors.Is(err, driver.ErrInvalid) {
		t.Errorf("nil wake channel: %v, want ErrInvalid", err)
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

func TestRenewUnimplemented(t *testing.T) {
	l := connect(t, t.TempDir())
	batch := []driver.Renewal{{Key: "a", Owner: driver.NewOwner(), TTL: time.Second}, {Key: "b"}}
	l.Renew(context.Background(), batch)
	for _, r := range batch {
		if !errors.Is(r.Err, driver.ErrUnimplemented) || !errors.Is(r.Err, errors.ErrUnsupported) {
			t.Errorf("Renew %q: %v, want ErrUnimplemented", r.Key, r.Err)
		}
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

func TestLossWhenLockFileRemoved(t *testing.T) {
	for _, how := range []string{"removed", "replaced"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			l := connect(t, dir, file.WithHeartbeat(20*time.Millisecond))
			lost := make(chan error, 2)
			o := driver.NewOwner()
			req := driver.AcquireRequest{Key: "k", Owner: o, OnLost: func(err error) { lost <- err }}
			if _, err := l.Acquire(ctx, req); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, file.FileName("k"))
			if how == "removed" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				other := filepath.Join(dir, "other")
				if err := os.WriteFile(other, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(other, path); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case err := <-lost:
				if !errors.Is(err, driver.ErrNotHeld) || !strings.Contains(err.Error(), "removed or replaced") {
					t.Fatalf("OnLost(%v), want ErrNotHeld saying the file was removed or replaced", err)
				}
			case <-time.After(wait):
				t.Fatal("OnLost not called")
			}
			if err := l.Release(ctx, "k", o); !errors.Is(err, driver.ErrNotHeld) {
				t.Fatalf("Release after loss: %v, want ErrNotHeld", err)
			}
			// The new file is free: the lost grant's fds were closed.
			if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()}); err != nil {
				t.Fatal(err)
			}
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
	stop, err := waiter.Watch("k", wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	stopMark, err := waiter.Watch("mark", mark)
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
	stop, err := l.Watch("k", wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	buffered := make(chan struct{}, 1)
	stop2, err := l.Watch("k", buffered)
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

	l, err := file.FromDir(dir, file.WithHeartbeat(10*time.Millisecond)).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"a", "b", "c"} {
		acquire(t, l, key, driver.NewOwner())
	}
	wake := make(chan struct{}, 1)
	if _, err := l.Watch("a", wake); err != nil {
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

	for _, err := range []error{
		l.Close(),
		l.Ping(ctx),
		l.Release(ctx, "a", driver.NewOwner()),
		func() error {
			_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "a", Owner: driver.NewOwner()})
			return err
		}(),
		func() error { _, err := l.Watch("a", wake); return err }(),
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
