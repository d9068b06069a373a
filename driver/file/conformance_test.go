//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, harnessOf(file.FromDir, true))
}

// TestConformanceWithoutNotify runs the suite as on a system without
// inotify: every loss is found by package mutex's verification (Renew).
func TestConformanceWithoutNotify(t *testing.T) {
	conformance.Run(t, harnessOf(file.FromDirWithoutNotify, false))
}

func harnessOf(connect func(dir string) driver.Connector, notify bool) conformance.HarnessMaker {
	return func(ctx context.Context, t *testing.T) (conformance.Harness, error) {
		return &harness{dir: t.TempDir(), connect: connect, notify: notify && runtime.GOOS == "linux"}, nil
	}
}

// harness: every connector gets its own Locker on one directory, which is
// all two processes would share.
type harness struct {
	dir      string
	connect  func(dir string) driver.Connector
	notify   bool // inotify wake-ups and loss reports
	mu       sync.Mutex
	children []*exec.Cmd
}

func (h *harness) NewConnector(context.Context) (driver.Connector, error) {
	return h.connect(h.dir), nil
}

// Vanish removes the lock file under its holder.
func (h *harness) Vanish(_ context.Context, key string) error {
	return os.Remove(filepath.Join(h.dir, file.FileName(key)))
}

// Abandon starts a child process that takes key, reports it, and a few
// seconds later kills itself with SIGKILL without releasing: a crash.
func (h *harness) Abandon(ctx context.Context, key string) error {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), helperEnv+"=abandon", "MUTEXKIT_FILE_DIR="+h.dir, "MUTEXKIT_FILE_KEY="+key)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	h.mu.Lock()
	h.children = append(h.children, cmd)
	h.mu.Unlock()
	ready := make(chan error, 1)
	go func() {
		r := bufio.NewReader(stdout)
		for {
			line, err := r.ReadString('\n')
			if strings.HasPrefix(line, "ready") {
				ready <- nil
				return
			}
			if err != nil {
				ready <- fmt.Errorf("abandoning child exited before taking the key: %w", err)
				return
			}
		}
	}()
	select {
	case err := <-ready:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *harness) Capabilities() conformance.Capabilities {
	c := conformance.Capabilities{
		Fencing:    true,
		TTL:        false,
		LossWithin: lossBound,        // at once through inotify, else at the client's next heartbeat
		FreeWithin: 30 * time.Second, // the child dies abandonSeconds after Abandon
		Queue:      true,             // a queue directory per key
	}
	if !h.notify {
		c.Lacks = map[string]string{"Queue/OneWake": "without inotify, Watch returns ErrUnimplemented: waiters poll"}
	}
	return c
}

func (h *harness) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, cmd := range h.children {
		cmd.Process.Kill()
		cmd.Wait()
	}
	h.children = nil
	return nil
}
