// Package childproc runs a test binary again as a child process, for tests
// that need several OS processes (contention across processes, a holder
// killed with SIGKILL). The child runs the test named TestHelperProcess,
// which acts on the role it finds in an environment variable.
package childproc

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Start starts this test binary's TestHelperProcess with envVar=role and
// env, stderr passed through; the child is killed when the test ends.
func Start(t testing.TB, envVar, role string, env ...string) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), append([]string{envVar + "=" + role}, env...)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, stdin, bufio.NewReader(stdout)
}

// ReadLine returns the next line the child prints that starts with prefix.
func ReadLine(t testing.TB, r *bufio.Reader, prefix string) string {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if strings.HasPrefix(line, prefix) {
			return strings.TrimSpace(line)
		}
		if err != nil {
			t.Fatalf("child exited before printing %q: %v", prefix, err)
		}
	}
}

// RunTogether starts n children in role, waits until each prints "ready",
// then writes "go" to all of them at once (so that they contend from the
// same moment) and waits for every one to exit; a child that fails fails t.
func RunTogether(t testing.TB, n int, envVar, role string, env ...string) {
	t.Helper()
	cmds := make([]*exec.Cmd, n)
	stdins := make([]io.WriteCloser, n)
	for i := range n {
		cmd, stdin, stdout := Start(t, envVar, role, env...)
		ReadLine(t, stdout, "ready")
		go io.Copy(io.Discard, stdout)
		cmds[i], stdins[i] = cmd, stdin
	}
	for _, w := range stdins {
		io.WriteString(w, "go\n")
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, cmd := range cmds {
		wg.Go(func() { errs[i] = cmd.Wait() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
	}
}
