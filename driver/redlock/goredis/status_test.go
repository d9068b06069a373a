package goredis_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutexkit/mutexkit/mutex"
)

// TestStatusReadsGoRedisHolder: the mutexkit command (built from this
// checkout; it reads through the redigo driver) reports a key a go-redis
// client holds: exit 75, this process's pid and the fencing token; and
// free (exit 0) once released.
func TestStatusReadsGoRedisHolder(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build mutexkit:", err)
	}
	bin := filepath.Join(t.TempDir(), "mutexkit")
	if out, err := exec.Command(gobin, "build", "-o", bin, "github.com/mutexkit/mutexkit/cmd/mutexkit").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ns := startNodes(t, 1)
	dsn := "redis://" + ns.servers[0].Addr() + "?prefix=" + ns.prefix
	status := func() (int, string) {
		cmd := exec.Command(bin, "status", "--key", "job", "--dsn", dsn)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), string(out)
	}
	cl := mutex.NewClient(ns.connector())
	defer cl.Close()
	l, err := cl.NewMutex("job", mutex.WithTTL(ttl), mutex.WithFencing()).Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	code, out := status()
	if want := fmt.Sprintf("pid %d", os.Getpid()); code != 75 || !strings.Contains(out, want) || !strings.Contains(out, fmt.Sprintf("token %d", l.Token())) {
		t.Fatalf("status of a go-redis holder: exit %d, %q; want 75 and %q, token %d", code, out, want, l.Token())
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if code, out := status(); code != 0 || !strings.Contains(out, "free") {
		t.Fatalf("status once released: exit %d, %q; want 0, free", code, out)
	}
}
