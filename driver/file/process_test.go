//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
	"github.com/mutexkit/mutexkit/internal/testing/childproc"
	"github.com/mutexkit/mutexkit/mutex"
)

// abandonSeconds is how long the conformance harness's abandoning child
// holds its key before it kills itself.
const abandonSeconds = 3

// helperEnv selects the role of a re-executed test binary.
const helperEnv = "MUTEXKIT_FILE_HELPER"

// helper starts this test binary as a child process in role.
func helper(t *testing.T, role string, env ...string) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	return childproc.Start(t, helperEnv, role, env...)
}

var readLine = childproc.ReadLine

// TestHelperProcess is the child side of the tests below; it does nothing
// unless started by them.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role == "" {
		t.Skip("child process of the multi-process tests")
	}
	if err := runHelper(role); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", role, err)
		os.Exit(2)
	}
	os.Exit(0)
}

func runHelper(role string) error {
	ctx := context.Background()
	dir, key := os.Getenv("MUTEXKIT_FILE_DIR"), os.Getenv("MUTEXKIT_FILE_KEY")
	l, err := file.FromDir(dir).Connect(ctx)
	if err != nil {
		return err
	}
	switch role {
	case "rounds":
		rounds, err := strconv.Atoi(os.Getenv("MUTEXKIT_FILE_ROUNDS"))
		if err != nil {
			return err
		}
		log, err := os.OpenFile(os.Getenv("MUTEXKIT_FILE_LOG"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		// Start together, so the two children contend.
		fmt.Println("ready")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return err
		}
		// Through package mutex, as users lock: waiting with inotify
		// wake-ups and backoff, in a client of its own per process.
		client := mutex.NewClient(file.FromDir(dir))
		defer client.Close()
		m := client.NewMutex(key)
		pid := os.Getpid()
		for range rounds {
			lease, err := m.Lock(ctx)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(log, "B %d %d\n", pid, lease.Token()); err != nil {
				return err
			}
			time.Sleep(time.Millisecond)
			if _, err := fmt.Fprintf(log, "E %d %d\n", pid, lease.Token()); err != nil {
				return err
			}
			if err := lease.Unlock(ctx); err != nil {
				return err
			}
			time.Sleep(100 * time.Microsecond) // give the other a chance
		}
		return l.Close()
	case "hold":
		g, err := l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner()})
		if err != nil {
			return err
		}
		fmt.Printf("ready %d\n", g.Token)
		time.Sleep(time.Hour) // until killed
		return nil
	case "queue":
		// One waiting attempt, then nothing: a place in the queue that only
		// the process's death (or QueueHold) frees.
		_, err := l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), Wait: true})
		if !errors.Is(err, driver.ErrLocked) {
			return fmt.Errorf("waiting attempt: %v, want ErrLocked", err)
		}
		fmt.Println("queued")
		time.Sleep(time.Hour) // until killed
		return nil
	case "abandon":
		if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner()}); err != nil {
			return err
		}
		fmt.Println("ready")
		// Long enough for the suite to see the key held, then crash.
		time.Sleep(abandonSeconds * time.Second)
		return syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	if run := linuxRoles[role]; run != nil {
		return run(ctx, l, key)
	}
	return fmt.Errorf("unknown role %q", role)
}

// linuxRoles are the roles of tests that run on Linux only.
var linuxRoles = map[string]func(ctx context.Context, l driver.Locker, key string) error{}

func TestTwoProcessesExclude(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	logPath := dir + "/log"
	const rounds = 150
	env := []string{
		"MUTEXKIT_FILE_DIR=" + dir + "/locks", "MUTEXKIT_FILE_KEY=shared",
		"MUTEXKIT_FILE_LOG=" + logPath, "MUTEXKIT_FILE_ROUNDS=" + strconv.Itoa(rounds),
	}
	childproc.RunTogether(t, 2, helperEnv, "rounds", env...)

	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 4*rounds {
		t.Fatalf("log has %d lines, want %d", len(lines), 4*rounds)
	}
	switches := 0
	var lastToken uint64
	for i := 0; i < len(lines); i += 2 {
		b, e := lines[i], lines[i+1]
		if !strings.HasPrefix(b, "B ") || e != "E "+b[2:] {
			t.Fatalf("critical sections overlap at line %d: %q then %q\n%s", i+1, b, e, excerpt(lines, i))
		}
		pid, tok, _ := strings.Cut(b[2:], " ")
		token, err := strconv.ParseUint(tok, 10, 64)
		if err != nil || token <= lastToken {
			t.Fatalf("line %d: token %q after %d; want strictly increasing\n%s", i+1, tok, lastToken, excerpt(lines, i))
		}
		lastToken = token
		if i > 0 && !strings.HasPrefix(lines[i-1][2:], pid+" ") {
			switches++
		}
	}
	t.Logf("%d rounds each, the lock changed process %d times", rounds, switches)
}

func excerpt(lines []string, i int) string {
	lo, hi := max(0, i-4), min(len(lines), i+6)
	var b bytes.Buffer
	for j := lo; j < hi; j++ {
		fmt.Fprintf(&b, "%4d %s\n", j+1, lines[j])
	}
	return b.String()
}

// A holder killed with SIGKILL frees the key: the kernel drops its flock
// with its descriptors, and a waiter in another process is woken.
func TestCrashRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	ctx := context.Background()
	dir := t.TempDir()
	l := connect(t, dir)
	wake := make(chan struct{}, 1)
	stop, err := l.Watch("crash", driver.NewOwner(), wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	cmd, _, stdout := helper(t, "hold", "MUTEXKIT_FILE_DIR="+dir, "MUTEXKIT_FILE_KEY=crash")
	line := readLine(t, stdout, "ready")
	childToken, err := strconv.ParseUint(strings.TrimPrefix(line, "ready "), 10, 64)
	if err != nil {
		t.Fatalf("child printed %q", line)
	}
	o := driver.NewOwner()
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "crash", Owner: o}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("while the child holds the key: %v, want ErrLocked", err)
	}
	select {
	case <-wake:
		t.Fatal("woken while the child still holds the key")
	default:
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	if runtime.GOOS == "linux" {
		select {
		case <-wake:
		case <-time.After(wait):
			t.Fatal("no wake-up after the holder died")
		}
	}
	deadline := time.Now().Add(wait)
	for {
		g, err := l.Acquire(ctx, driver.AcquireRequest{Key: "crash", Owner: o})
		if err == nil {
			if g.Token != childToken+1 {
				t.Fatalf("token %d after the child's %d", g.Token, childToken)
			}
			break
		}
		if !errors.Is(err, driver.ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("after the holder died: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
