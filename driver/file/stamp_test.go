//go:build linux

package file_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mutexkit/mutexkit/driver"
)

func init() { linuxRoles["waitnoproc"] = waitWithoutProc }

// waitWithoutProc hides /proc (the child has a mount namespace of its own)
// and waits for key as package mutex does: an attempt every half second.
func waitWithoutProc(ctx context.Context, l driver.Locker, key string) error {
	if err := syscall.Mount("none", "/proc", "tmpfs", 0, ""); err != nil {
		return err
	}
	if _, err := os.Stat("/proc/self/fd"); err == nil {
		return errors.New("/proc/self/fd still there")
	}
	o := driver.NewOwner()
	for i := 0; ; i++ {
		_, err := l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: o, Wait: true})
		if err == nil {
			fmt.Println("granted")
			time.Sleep(time.Hour) // until killed
		}
		if !errors.Is(err, driver.ErrLocked) {
			return err
		}
		if i == 0 {
			fmt.Println("queued")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// entries lists the waiters' entries in key's queue, in arrival order.
func entries(t *testing.T, dir, key string) []string {
	t.Helper()
	des, err := os.ReadDir(queueDirOf(dir, key))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ".w") {
			names = append(names, de.Name())
		}
	}
	slices.Sort(names)
	return names
}

// TestQueueTouchWithoutProc: a waiter in a process without /proc (a
// container, a chroot) records its attempts in its entry all the same, so
// it keeps its place past QueueHold while others look at the queue, and is
// served first.
func TestQueueTouchWithoutProc(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs a mount namespace of its own (root) to hide /proc")
	}
	ctx := context.Background()
	dir := t.TempDir()
	holder := connect(t, dir)
	h := driver.NewOwner()
	acquire(t, holder, "k", h)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), helperEnv+"=waitnoproc", "MUTEXKIT_FILE_DIR="+dir, "MUTEXKIT_FILE_KEY=k")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("no mount namespace: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	stdout := bufio.NewReader(out)
	readLine(t, stdout, "queued")
	child := entries(t, dir, "k")

	// A waiter behind it looks at the head at each of its attempts.
	b := newQueuer(t, dir, "k")
	for end := time.Now().Add(driver.QueueHold + 1500*time.Millisecond); time.Now().Before(end); {
		time.Sleep(500 * time.Millisecond)
		b.try(t, "k", false)
	}
	if got := entries(t, dir, "k"); len(got) != 2 || got[0] != child[0] {
		t.Fatalf("queue %v, want the child's entry %v still at the head", got, child)
	}
	if err := holder.Release(ctx, "k", h); err != nil {
		t.Fatal(err)
	}
	b.try(t, "k", false) // kept for the child
	readLine(t, stdout, "granted")
}

// TestQueueStampMonotonic: a waiter's attempts stamp its entry's mtime with
// the host's monotonic clock, which no step of the wall clock moves, so a
// step can neither age a live waiter nor keep a stopped one young. An entry
// stamped by the wall clock (by hand, or by an older version) is passed
// over.
func TestQueueStampMonotonic(t *testing.T) {
	dir := t.TempDir()
	holder := connect(t, dir)
	acquire(t, holder, "k", driver.NewOwner())
	mono := func() int64 {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		return ts.Nano()
	}
	check := func(when string, before, after int64) string {
		t.Helper()
		names := entries(t, dir, "k")
		path := filepath.Join(queueDirOf(dir, "k"), names[0])
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.ModTime().UnixNano(); m < before || m > after {
			t.Fatalf("%s: entry stamped %d, want the monotonic clock, in [%d, %d]", when, m, before, after)
		}
		return path
	}
	before := mono()
	a := newQueuer(t, dir, "k")
	check("first attempt", before, mono())
	before = mono()
	a.try(t, "k", false)
	path := check("next attempt", before, mono())

	now := time.Now()
	if err := os.Chtimes(path, now, now); err != nil {
		t.Fatal(err)
	}
	b := newQueuer(t, dir, "k") // looks at the head
	if got := entries(t, dir, "k"); len(got) != 1 || !strings.HasSuffix(got[0], b.owner.String()+".w") {
		t.Fatalf("queue %v, want b's entry alone: a wall clock stamp is passed over", got)
	}
}

// TestQueueTempEntryAgedByName: an entry being made (".t", not yet
// flocked) is judged by the stamp in its name alone, never opened nor
// flocked (a prober's flock could make its maker's fail): a fresh one stays,
// whatever its mtime or kind, and an old one is removed.
func TestQueueTempEntryAgedByName(t *testing.T) {
	dir := t.TempDir()
	holder := connect(t, dir)
	acquire(t, holder, "k", driver.NewOwner())
	a := newQueuer(t, dir, "k")
	head := entries(t, dir, "k")[0]
	st, err := strconv.ParseUint(head[:20], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	qdir := queueDirOf(dir, "k")
	name := func(stamp uint64) string {
		return filepath.Join(qdir, fmt.Sprintf("%020d-%s.t", stamp, driver.NewOwner()))
	}
	old := name(st - uint64(driver.QueueHold) - uint64(time.Second))
	fresh, freshLink := name(st-2), name(st-1) // fresh, and ahead of a
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, nil, 0o644); err != nil { // mtime: the wall clock
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/nonexistent", freshLink); err != nil {
		t.Fatal(err)
	}
	stranger := connect(t, dir)
	if _, err := stranger.Acquire(context.Background(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("TryLock looking past entries being made: %v, want ErrLocked", err)
	}
	for p, want := range map[string]bool{old: false, fresh: true, freshLink: true} {
		if _, err := os.Lstat(p); (err == nil) != want {
			t.Errorf("%s after a look: %v, want it there: %v", filepath.Base(p), err, want)
		}
	}
	a.try(t, "k", false)
}
