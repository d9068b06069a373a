package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests build the command and run it as real processes.

var binary string

func TestMain(m *testing.M) {
	// The tests mostly wait on processes and timers, not the CPU: run more
	// of them at once than -parallel's default (GOMAXPROCS), unless told.
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		flag.Set("test.parallel", "8")
	}
	dir, err := os.MkdirTemp("", "mutexkit-cmd")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mutexkit")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a test's environment for the command: a lock directory of its
// own, as the DSN, and a private TMPDIR for the no-DSN default.
type env struct {
	t    *testing.T
	dir  string // scratch: logs, pid files
	vars []string
}

func newEnv(t *testing.T) *env {
	dir := t.TempDir()
	return &env{t: t, dir: dir, vars: []string{"MUTEXKIT_DSN=file://" + filepath.Join(dir, "locks"), "TMPDIR=" + dir}}
}

func (e *env) command(args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), e.vars...)
	return cmd
}

// runLimit bounds a run: the command under test may hang (an old bug, a
// wait it should not make), and the test must fail, not the test binary.
const runLimit = 2 * time.Minute

// run runs the command to the end and returns its exit code and output.
func (e *env) run(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	cmd := e.command(args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("run %v: %v", args, err)
	}
	limit := time.AfterFunc(runLimit, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	if !limit.Stop() {
		e.t.Fatalf("run %v: still running after %v; killed", args, runLimit)
	}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		e.t.Fatalf("run %v: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// waitFor polls cond until it holds, failing after a generous bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fileExists(path string) bool { _, err := os.Stat(path); return err == nil }

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// waitPID waits until the program has written its pid to path.
func waitPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, "the program to start", func() bool {
		b, err := os.ReadFile(path)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return pid
}

// TestCronSkip: three runs started together with --wait 0: one runs the
// job, the other two skip with the skip code.
func TestCronSkip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	started := filepath.Join(e.dir, "started")
	job := fmt.Sprintf("echo run >> %s; sleep 3", started)
	codes := make([]int, 3)
	stderrs := make([]string, 3)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Go(func() { codes[i], _, stderrs[i] = e.run("run", "--key", "cron", "--wait", "0", "--", "sh", "-c", job) })
	}
	wg.Wait()
	ran, skipped := 0, 0
	for i, c := range codes {
		switch c {
		case 0:
			ran++
		case exitSkipped:
			skipped++
			if !strings.Contains(stderrs[i], `lock "cron" is held elsewhere; skipping`) || strings.Count(stderrs[i], "\n") != 1 {
				t.Errorf("skip message: %q; want one line", stderrs[i])
			}
		default:
			t.Errorf("exit code %d: %s", c, stderrs[i])
		}
	}
	b, _ := os.ReadFile(started)
	if ran != 1 || skipped != 2 || strings.Count(string(b), "run") != 1 {
		t.Fatalf("%d ran, %d skipped, job started %d times; want 1, 2, 1", ran, skipped, strings.Count(string(b), "run"))
	}
}

// TestWaitSerializes: with --wait, all three run, one at a time (the file
// driver; backends_test.go runs the same on the servers).
func TestWaitSerializes(t *testing.T) {
	t.Parallel()
	testInTurn(t, newEnv(t), server{name: "file"})
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if code, _, _ := e.run("run", "--key", "x", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("program exit 7: got %d", code)
	}
	if code, _, _ := e.run("run", "--key", "x", "--", "sh", "-c", "kill -TERM $$"); code != 128+15 {
		t.Errorf("program killed by SIGTERM: got %d, want 143", code)
	}
	if code, _, stderr := e.run("run", "--key", "x", "--", "/nonexistent/program"); code != 127 || !strings.Contains(stderr, "/nonexistent/program") {
		t.Errorf("missing program: %d %q; want 127 naming it", code, stderr)
	}
	held := e.command("run", "--key", "x", "--", "sleep", "30")
	held.Start()
	defer func() { held.Process.Kill(); held.Wait() }()
	waitFor(t, "the lock to be held", func() bool {
		_, out, _ := e.run("status", "--key", "x")
		return strings.Contains(out, "held")
	})
	if code, _, _ := e.run("run", "--key", "x", "--skip-code", "0", "--", "true"); code != 0 {
		t.Errorf("--skip-code 0: got %d", code)
	}
	if code, _, _ := e.run("run", "--key", "x", "--skip-code", "9", "--", "true"); code != 9 {
		t.Errorf("--skip-code 9: got %d", code)
	}
	if code, _, _ := e.run("run", "--key", "x", "--wait", "200ms", "--", "true"); code != exitSkipped {
		t.Errorf("--wait that runs out: got %d, want the skip code", code)
	}
}

// TestSignalsPassThrough: SIGTERM to mutexkit reaches the program, whose
// exit code is the command's.
func TestSignalsPassThrough(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ready, got := filepath.Join(e.dir, "ready"), filepath.Join(e.dir, "got")
	job := fmt.Sprintf(`trap 'echo TERM > %s; exit 5' TERM; touch %s; while :; do sleep 0.05; done`, got, ready)
	cmd := e.command("run", "--key", "sig", "--", "sh", "-c", job)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the program to start", func() bool { return fileExists(ready) })
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 5 {
		t.Fatalf("mutexkit after SIGTERM: %v; want the program's exit code 5", err)
	}
	if b, _ := os.ReadFile(got); strings.TrimSpace(string(b)) != "TERM" {
		t.Fatal("the program did not get SIGTERM")
	}
}

// TestKilledHolder: mutexkit killed with SIGKILL takes its program with it,
// and the lock is free at once (file driver: the kernel drops the flock).
func TestKilledHolder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pidFile := filepath.Join(e.dir, "pid")
	cmd := e.command("run", "--key", "killed", "--", "sh", "-c", fmt.Sprintf("echo $$ > %s; exec sleep 60", pidFile))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, pidFile)
	cmd.Process.Kill()
	cmd.Wait()
	waitFor(t, "the program to die with mutexkit", func() bool { return !alive(pid) })
	if code, _, stderr := e.run("run", "--key", "killed", "--", "true"); code != 0 {
		t.Fatalf("run after the holder was killed: %d %s", code, stderr)
	}
}

// TestLostLeaseStopsProgram: when the lock is lost while the program runs
// (here its lock file is removed), the program is stopped and the command
// exits with the lost code.
func TestLostLeaseStopsProgram(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pidFile := filepath.Join(e.dir, "pid")
	cmd := e.command("run", "--key", "lost", "--grace", "1s", "--", "sh", "-c", fmt.Sprintf("echo $$ > %s; exec sleep 60", pidFile))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, pidFile)
	locks, _ := filepath.Glob(filepath.Join(e.dir, "locks", "lost-*.lock"))
	if len(locks) != 1 {
		t.Fatalf("lock files %v", locks)
	}
	os.Remove(locks[0])
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitLost {
		t.Fatalf("exit %v; want the lost code %d; stderr:\n%s", err, exitLost, stderr.String())
	}
	if !strings.Contains(stderr.String(), `lock "lost" lost while the program ran`) {
		t.Errorf("stderr %q does not say the lock was lost", stderr.String())
	}
	if alive(pid) {
		t.Fatal("the program still runs after its lock was lost")
	}
}

// TestMinHold: the lock stays held after a short job until --min-hold has
// passed, so a run that fires a little later skips.
func TestMinHold(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.command("run", "--key", "hold", "--min-hold", "3s", "--", "true")
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { first.Wait(); close(done) }()
	waitFor(t, "the lock to be held", func() bool {
		_, out, _ := e.run("status", "--key", "hold")
		return strings.Contains(out, "held")
	})
	code, _, _ := e.run("run", "--key", "hold", "--", "true")
	select {
	case <-done:
		t.Skip("the machine is too slow to observe the min hold: the first run already ended")
	default:
	}
	if code != exitSkipped {
		t.Fatalf("run inside the min hold: exit %d; want the skip code", code)
	}
	<-done
	if code, _, stderr := e.run("run", "--key", "hold", "--", "true"); code != 0 {
		t.Fatalf("run after the min hold: %d %s", code, stderr)
	}
}

// TestNoDSNSaysHostLocal: without a DSN the file driver is used, and the
// command says once that the lock is host-local.
func TestNoDSNSaysHostLocal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.vars = []string{"MUTEXKIT_DSN=", "TMPDIR=" + e.dir}
	code, _, stderr := e.run("run", "--key", "local", "--", "true")
	if code != 0 || strings.Count(stderr, "host-local") != 1 {
		t.Fatalf("exit %d, stderr %q; want one host-local notice", code, stderr)
	}
	if !fileExists(filepath.Join(e.dir, "mutexkit-locks")) || !strings.Contains(stderr, filepath.Join(e.dir, "mutexkit-locks")) {
		t.Errorf("the default lock directory is not $TMPDIR/mutexkit-locks, or not named: %q", stderr)
	}
}

// TestBinaryInTMPDIR: the binary built as $TMPDIR/mutexkit, the obvious
// place, and the default lock directory do not get in each other's way.
func TestBinaryInTMPDIR(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.vars = []string{"MUTEXKIT_DSN=", "TMPDIR=" + e.dir}
	b, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	inTmp := filepath.Join(e.dir, "mutexkit")
	if err := os.WriteFile(inTmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(inTmp, "run", "--key", "k", "--", "true")
	cmd.Env = append(os.Environ(), e.vars...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("$TMPDIR/mutexkit run with no DSN: %v\n%s", err, out)
	}
	if fi, err := os.Stat(inTmp); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("the binary at $TMPDIR/mutexkit: %v, %v", fi, err)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if code, out, _ := e.run("status", "--key", "s"); code != 0 || !strings.Contains(out, `"s" is free`) {
		t.Fatalf("status of a free key: %d %q", code, out)
	}
	cmd := e.command("run", "--key", "s", "--", "sleep", "30")
	cmd.Start()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitFor(t, "the lock to be held", func() bool {
		_, out, _ := e.run("status", "--key", "s")
		return strings.Contains(out, "held")
	})
	code, out, _ := e.run("status", "--key", "s")
	if code != exitHeld {
		t.Errorf("status of a held key: exit %d; want %d", code, exitHeld)
	}
	host, _ := os.Hostname()
	want := fmt.Sprintf(`"s" is held by host %s, pid %d, since `, host, cmd.Process.Pid)
	if !strings.HasPrefix(out, want) || !strings.Contains(out, "token 1") {
		t.Fatalf("status: %q; want it to start %q and give the token", out, want)
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"status", "--help"}, {"drivers", "--help"}} {
		code, out, stderr := e.run(args...)
		if code != 0 || !strings.Contains(out+stderr, "Usage") {
			t.Errorf("%v: exit %d, output %q", args, code, out+stderr)
		}
		if args[0] != "--help" && args[0] != "drivers" && !strings.Contains(out+stderr, "Examples") {
			t.Errorf("%v: no examples", args)
		}
	}
	if code, out, _ := e.run("drivers"); code != 0 || !strings.Contains(out, "file\n") || !strings.Contains(out, "redis\n") {
		t.Errorf("drivers: %d %q", code, out)
	}
	for _, args := range [][]string{
		{"run", "--", "true"}, // no key
		{"run", "--key", "k"}, // no program
		{"run", "--key", "k", "--bogus", "--", "true"},
		{"status"},
		{"frobnicate"},
	} {
		if code, _, stderr := e.run(args...); code != exitUsage || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want %d and a message", args, code, stderr, exitUsage)
		}
	}
}

// TestErrorsHideThePassword: a DSN's password never reaches the output.
func TestErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, dsn := range []string{
		"postgres://app:hunter2@127.0.0.1:1/db?sslmode=disable",
		"redis://:hunter2@127.0.0.1:1",
		"bogus://app:hunter2@host",
		"app:hunter2@host",
	} {
		code, out, stderr := e.run("run", "--key", "k", "--dsn", dsn, "--", "true")
		if code == 0 || strings.Contains(out+stderr, "hunter2") {
			t.Errorf("DSN %s: exit %d, output %q", dsn, code, out+stderr)
		}
		if strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("DSN %s: error on more than one line: %q", dsn, stderr)
		}
	}
}

// TestUsageMistakeOneLine: a mistake in the arguments gets one line on
// stderr that says what and where to look, not the whole help; help asked
// for goes to stdout.
func TestUsageMistakeOneLine(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--key", "k", "--bogus", "--", "true"}, "mutexkit run: flag provided but not defined: -bogus; see mutexkit run --help"},
		{[]string{"run", "--key", "k", "--wait", "soon", "--", "true"}, `mutexkit run: invalid value "soon" for flag -wait`},
		{[]string{"status", "--key", "k", "-x"}, "mutexkit status: flag provided but not defined: -x; see mutexkit status --help"},
		{[]string{"status", "--key", "k", "extra"}, "mutexkit status: --key is required, and nothing else; see mutexkit status --help"},
		{[]string{"drivers", "extra"}, "mutexkit drivers: takes no arguments; see mutexkit drivers --help"},
	} {
		code, out, stderr := e.run(c.args...)
		if code != exitUsage || out != "" || !strings.HasPrefix(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d and one line starting %q", c.args, code, out, stderr, exitUsage, c.want)
		}
	}
	for _, args := range [][]string{{"run", "--help"}, {"status", "-h"}} {
		if code, out, stderr := e.run(args...); code != 0 || !strings.HasPrefix(out, "Usage") || !strings.Contains(out, "-key") || stderr != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want the help and its flags on stdout", args, code, out, stderr)
		}
	}
}

// TestNoMemDriver: the mem driver's locks live in one process, and each
// run is a process of its own, so the command neither lists nor takes it.
func TestNoMemDriver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if code, out, _ := e.run("drivers"); code != 0 || strings.Contains(out, "mem") {
		t.Errorf("drivers: exit %d, %q; want no mem", code, out)
	}
	for _, args := range [][]string{
		{"run", "--key", "k", "--dsn", "mem://x", "--", "true"},
		{"status", "--key", "k", "--dsn", "mem:"},
	} {
		code, _, stderr := e.run(args...)
		if code != exitUsage || !strings.Contains(stderr, "memory of one process") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want %d and one line saying why", args, code, stderr, exitUsage)
		}
	}
}

// TestVersion: version prints the module version from the build
// information, as go version -m reads it, and the Go version; a build
// without version control information says (devel).
func TestVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	out, err := exec.Command("go", "version", "-m", binary).Output()
	if err != nil {
		t.Fatal(err)
	}
	var mod, goVersion string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && strings.HasSuffix(f[0], ":"):
			goVersion = f[1] // "binary: go1.26.0"
		case len(f) >= 3 && f[0] == "mod":
			mod = f[2]
		}
	}
	if mod == "" || goVersion == "" {
		t.Fatalf("go version -m:\n%s", out)
	}
	want := fmt.Sprintf("mutexkit %s %s ", mod, goVersion)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if code, got, _ := e.run(args...); code != 0 || !strings.HasPrefix(got, want) || strings.Count(got, "\n") != 1 {
			t.Errorf("%v: exit %d, %q; want one line starting %q", args, code, got, want)
		}
	}
	if code, _, stderr := e.run("version", "extra"); code != exitUsage || stderr == "" {
		t.Errorf("version extra: exit %d, %q; want %d", code, stderr, exitUsage)
	}

	devel := filepath.Join(e.dir, "mutexkit-novcs")
	// -race, as the test binary is built: the build cache then has it all.
	if out, err := exec.Command("go", "build", "-race", "-buildvcs=false", "-o", devel, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	got, err := exec.Command(devel, "version").Output()
	if err != nil || !strings.HasPrefix(string(got), "mutexkit (devel) go") {
		t.Fatalf("version of a build without VCS information: %q, %v; want (devel)", got, err)
	}
}

// TestMinHoldBounds: --min-hold is bounded as the library bounds it, and
// the help says that mutexkit keeps running for the hold.
func TestMinHoldBounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	code, _, stderr := e.run("run", "--key", "k", "--min-hold", "25h", "--", "true")
	if code != exitUsage || !strings.Contains(stderr, "--min-hold 25h is longer than 24h") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("--min-hold 25h: exit %d, %q; want %d and one line naming the bound", code, stderr, exitUsage)
	}
	_, help, _ := e.run("run", "--help")
	if !strings.Contains(help, "mutexkit keeps running, holding it") || !strings.Contains(help, "(at most 24h)") {
		t.Errorf("run --help does not say that --min-hold keeps mutexkit running, or its bound:\n%s", help)
	}
}
