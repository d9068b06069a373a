package pgsuite

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/childproc"
	"github.com/mutexkit/mutexkit/mutex"
)

// helperEnv selects the role of a re-executed test binary.
const helperEnv = "MUTEXKIT_POSTGRES_HELPER"

// HelperProcess is the child side of the scenarios that need processes of
// their own; each module's TestHelperProcess calls it with its client,
// which is the one the children use (a scenario re-executes the test
// binary it runs in). It skips t unless a scenario started this process,
// and otherwise never returns: it exits 0 when its role is done, 2 when it
// fails.
func HelperProcess(t *testing.T, c Client) {
	role := os.Getenv(helperEnv)
	if role == "" {
		t.Skip("child process of the multi-process scenarios")
	}
	if err := runHelper(t, c, role); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", role, err)
		os.Exit(2)
	}
	os.Exit(0)
}

// runHelper plays role on the client's connector to MUTEXKIT_PG_DSN in
// namespace MUTEXKIT_PG_NS: "rounds" (TwoProcessesExclude), "hold"
// (CrashedProcessFreesKey) or "netcut" (ClusterNetworkCutFreesLocks).
func runHelper(t *testing.T, c Client, role string) error {
	ctx := context.Background()
	opts := []postgres.Option{postgres.WithNamespace(os.Getenv("MUTEXKIT_PG_NS"))}
	if role == "netcut" {
		opts = append(opts, postgres.WithKeepalive(netcutIdle, netcutInterval, netcutCount))
	}
	mc := mutex.NewClient(c.Connect(t, os.Getenv("MUTEXKIT_PG_DSN"), opts...))
	defer mc.Close()
	m := mc.NewMutex("shared", mutex.WithFencing())
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
		if err := mc.Ping(ctx); err != nil {
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
	case "netcut":
		if _, err := mc.NewMutex("netcut").Lock(ctx); err != nil {
			return err
		}
		fmt.Println("held")
		time.Sleep(time.Hour) // until stopped and killed
	}
	return fmt.Errorf("unknown role %q", role)
}

// helperArgs are the arguments that run this test binary's
// TestHelperProcess alone.
var helperArgs = []string{"-test.run=^TestHelperProcess$", "-test.count=1", "-test.timeout=10m"}

// TwoProcessesExclude: two processes contend for one key: their critical
// sections never overlap, and fencing tokens increase across them.
func TwoProcessesExclude(t *testing.T, c Client) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dsn, _ := adminDB(t)
	logPath := t.TempDir() + "/log"
	const rounds = 100
	env := []string{"MUTEXKIT_PG_DSN=" + dsn, "MUTEXKIT_PG_NS=" + Namespace(t),
		"MUTEXKIT_PG_LOG=" + logPath, "MUTEXKIT_PG_ROUNDS=" + strconv.Itoa(rounds)}
	childproc.RunTogether(t, 2, helperEnv, "rounds", env...)
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

// CrashedProcessFreesKey: a holder killed with SIGKILL frees the key: its
// connection closes with it, and the server ends the session.
func CrashedProcessFreesKey(t *testing.T, c Client) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dsn, _ := adminDB(t)
	ns := Namespace(t)
	cmd, _, stdout := childproc.Start(t, helperEnv, "hold", "MUTEXKIT_PG_DSN="+dsn, "MUTEXKIT_PG_NS="+ns)
	line := childproc.ReadLine(t, stdout, "ready")
	childToken, _ := strconv.ParseUint(strings.TrimPrefix(line, "ready "), 10, 64)
	mc := open(t, c, dsn, ns, nil)
	if _, err := mc.NewMutex("shared", mutex.WithFencing()).TryLock(t.Context()); err == nil {
		t.Fatal("TryLock succeeded while the child holds the key")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	l, err := mc.NewMutex("shared", mutex.WithFencing()).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v", err)
	}
	if l.Token() <= childToken {
		t.Fatalf("token %d after the child's %d", l.Token(), childToken)
	}
	l.Unlock(t.Context())
}
