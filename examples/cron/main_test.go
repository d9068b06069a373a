package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestQuickstart runs the README's first command as written (with a short
// job), then two copies at once on one lock directory: one runs, one skips.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example")
	}
	dsn := t.TempDir()
	cmd := exec.Command("go", "run", ".", "-work", "10ms")
	cmd.Env = append(os.Environ(), "MUTEXKIT_DSN=file://"+dsn)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `running "nightly-report"`) || !strings.Contains(string(out), "host-local") {
		t.Fatalf("go run ./examples/cron: %v\n%s", err, out)
	}

	bin := filepath.Join(t.TempDir(), "cron")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The first holds the lock until the test has seen the second skip.
	first := exec.Command(bin, "-work", "1m")
	first.Env = append(os.Environ(), "MUTEXKIT_DSN=file://"+dsn)
	stdout, _ := first.StdoutPipe()
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { first.Process.Kill(); first.Wait() }) }
	defer stop()
	buf := make([]byte, 256)
	n, _ := stdout.Read(buf)
	if !bytes.Contains(buf[:n], []byte("running")) {
		t.Fatalf("first run printed %q; want it to run the job", buf[:n])
	}
	second := exec.Command(bin, "-work", "10ms")
	second.Env = append(os.Environ(), "MUTEXKIT_DSN=file://"+dsn)
	out, err = second.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "skipping") {
		t.Fatalf("second run while the first holds the lock: %v\n%s", err, out)
	}
	stop() // the holder dies: the kernel frees its flock
	out, err = exec.Command(bin, "-work", "10ms").CombinedOutput()
	if err == nil { // MUTEXKIT_DSN unset: the default directory; just check it runs
		t.Logf("default directory run:\n%s", out)
	} else {
		t.Fatalf("run on the default directory: %v\n%s", err, out)
	}
	third := exec.Command(bin, "-work", "10ms")
	third.Env = append(os.Environ(), "MUTEXKIT_DSN=file://"+dsn)
	if out, err := third.CombinedOutput(); err != nil || !strings.Contains(string(out), "running") {
		t.Fatalf("run after the holder was killed: %v\n%s", err, out)
	}
}
