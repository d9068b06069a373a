package mysql_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/mutex"
)

// The child process of TestTwoProcesses: it takes the key (fenced, so the
// fencing table records its pid), says so, and holds it until killed.
func TestChildHolder(t *testing.T) {
	ns := os.Getenv("MUTEXKIT_MYSQL_CHILD_NS")
	if ns == "" {
		t.Skip("run by TestTwoProcesses")
	}
	dsn, _ := testDSN(t)
	c := openClient(t, dsn, ns)
	if _, err := c.NewMutex("proc", mutex.WithFencing()).TryLock(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("held\n")
	time.Sleep(time.Minute)
}

// Two OS processes: a key the child holds is refused to the parent,
// Inspect names the child's pid, and SIGKILL of the child frees the key at
// once (the server sees its connection close).
func TestTwoProcesses(t *testing.T) {
	dsn, _ := testDSN(t)
	ns := uniqueNamespace(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildHolder$", "-test.v")
	cmd.Env = append(os.Environ(), "MUTEXKIT_MYSQL_CHILD_NS="+ns)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	held := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "held" {
				held <- true
			}
		}
		close(held)
	}()
	select {
	case ok := <-held:
		if !ok {
			t.Fatal("the child ended without taking the key")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the child did not take the key within 30s")
	}
	c := openClient(t, dsn, ns)
	if _, err := c.NewMutex("proc").TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock of the child's key: %v; want ErrLocked", err)
	}
	who, ok, err := c.Inspect(t.Context(), "proc")
	if err != nil || !ok || who.PID != cmd.Process.Pid {
		t.Fatalf("Inspect: %+v, held %v, %v; want the child's pid %d", who, ok, err, cmd.Process.Pid)
	}
	start := time.Now()
	cmd.Process.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	l, err := c.NewMutex("proc").Lock(ctx)
	if err != nil {
		t.Fatalf("key of a killed process not free within 10s: %v", err)
	}
	t.Logf("taken %v after SIGKILL of the holder", time.Since(start).Round(time.Millisecond))
	l.Unlock(t.Context())
}
