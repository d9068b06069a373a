package postgres_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/childproc"
	"github.com/mutexkit/mutexkit/mutex"
)

// helperEnv selects the role of a re-executed test binary.
const helperEnv = "MUTEXKIT_POSTGRES_HELPER"

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
	conn, err := postgres.NewConnector(os.Getenv("MUTEXKIT_PG_DSN"), postgres.WithNamespace(os.Getenv("MUTEXKIT_PG_NS")))
	if err != nil {
		return err
	}
	c := mutex.NewClient(conn)
	defer c.Close()
	m := c.NewMutex("shared", mutex.WithFencing())
	switch role {
	case "rounds":
		rounds, err := strconv.Atoi(os.Getenv("MUTEXKIT_PG_ROUNDS"))
		if err != nil {
			return err
		}
		log, err := os.OpenFile(os.Getenv("MUTEXKIT_PG_LOG"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		if err := c.Ping(ctx); err != nil {
			return err
		}
		fmt.Println("ready")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return err
		}
		pid := os.Getpid()
		for range rounds {
			l, err := m.Lock(ctx)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(log, "B %d %d\n", pid, l.Token()); err != nil {
				return err
			}
			time.Sleep(time.Millisecond)
			if _, err := fmt.Fprintf(log, "E %d %d\n", pid, l.Token()); err != nil {
				return err
			}
			if err := l.Unlock(ctx); err != nil {
				return err
			}
		}
		return nil
	case "hold":
		l, err := m.Lock(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("ready %d\n", l.Token())
		time.Sleep(time.Hour) // until killed
	}
	return fmt.Errorf("unknown role %q", role)
}

// helper starts this test binary as a child process in role.
func helper(t *testing.T, role string, env ...string) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	return childproc.Start(t, helperEnv, role, env...)
}

var readLine = childproc.ReadLine

// Two processes contend for one key: their critical sections never
// overlap, and fencing tokens increase across them.
func TestTwoProcessesExclude(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dsn, _ := openDB(t)
	logPath := t.TempDir() + "/log"
	const rounds = 100
	env := []string{"MUTEXKIT_PG_DSN=" + dsn, "MUTEXKIT_PG_NS=" + t.Name() + time.Now().String(),
		"MUTEXKIT_PG_LOG=" + logPath, "MUTEXKIT_PG_ROUNDS=" + strconv.Itoa(rounds)}
	var cmds []*exec.Cmd
	var stdins []io.WriteCloser
	for range 2 {
		cmd, stdin, stdout := helper(t, "rounds", env...)
		readLine(t, stdout, "ready")
		go io.Copy(io.Discard, stdout)
		cmds, stdins = append(cmds, cmd), append(stdins, stdin)
	}
	for _, w := range stdins {
		io.WriteString(w, "go\n")
	}
	var wg sync.WaitGroup
	errs := make([]error, len(cmds))
	for i, cmd := range cmds {
		wg.Go(func() { errs[i] = cmd.Wait() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
	}
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 4*rounds {
		t.Fatalf("log has %d lines, want %d", len(lines), 4*rounds)
	}
	var lastToken uint64
	switches := 0
	for i := 0; i < len(lines); i += 2 {
		b, e := lines[i], lines[i+1]
		if !strings.HasPrefix(b, "B ") || e != "E "+b[2:] {
			t.Fatalf("critical sections overlap at line %d: %q then %q", i+1, b, e)
		}
		tok, _ := strconv.ParseUint(strings.Fields(b)[2], 10, 64)
		if tok <= lastToken {
			t.Fatalf("token %d after %d at line %d", tok, lastToken, i+1)
		}
		lastToken = tok
		if i > 0 && strings.Fields(lines[i-1])[1] != strings.Fields(b)[1] {
			switches++
		}
	}
	t.Logf("%d rounds each, the lock changed process %d times", rounds, switches)
}

// A holder killed with SIGKILL frees the key: its connection closes with
// it, and the server ends the session.
func TestCrashedProcessFreesKey(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dsn, _ := openDB(t)
	ns := t.Name() + time.Now().String()
	cmd, _, stdout := helper(t, "hold", "MUTEXKIT_PG_DSN="+dsn, "MUTEXKIT_PG_NS="+ns)
	line := readLine(t, stdout, "ready")
	childToken, _ := strconv.ParseUint(strings.TrimPrefix(line, "ready "), 10, 64)
	c := openClient(t, dsn, ns)
	if _, err := c.NewMutex("shared", mutex.WithFencing()).TryLock(t.Context()); err == nil {
		t.Fatal("TryLock succeeded while the child holds the key")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	l, err := c.NewMutex("shared", mutex.WithFencing()).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v", err)
	}
	if l.Token() <= childToken {
		t.Fatalf("token %d after the child's %d", l.Token(), childToken)
	}
	l.Unlock(t.Context())
}
