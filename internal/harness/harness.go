// Package harness holds conformance harnesses shared by tests of several
// packages: the mem driver's, and a simple one of the file driver's for
// suites that stack middleware over a backend with real I/O.
package harness

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
	"github.com/mutexkit/mutexkit/driver/mem"
)

// Mem makes a harness on a private mem table per case; its connectors act
// as two nodes of one backend.
func Mem(context.Context, *testing.T) (conformance.Harness, error) {
	return memHarness{mem.NewTable()}, nil
}

type memHarness struct{ table *mem.Table }

func (h memHarness) NewConnector(context.Context) (driver.Connector, error) {
	return mem.FromTable(h.table), nil
}

// Vanish expires the grant silently, as a Redis node restarted empty would:
// the holder must find out by renewing.
func (h memHarness) Vanish(_ context.Context, key string) error {
	h.table.Expire(key)
	return nil
}

// Abandon takes key with a one-second TTL and never renews or releases it.
func (h memHarness) Abandon(ctx context.Context, key string) error {
	l, err := mem.FromTable(h.table).Connect(ctx)
	if err != nil {
		return err
	}
	_, err = l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), TTL: time.Second})
	return err
}

func (memHarness) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{Fencing: true, TTL: true, LossWithin: 5 * time.Second, FreeWithin: 10 * time.Second}
}

func (memHarness) Close() error { return nil }

// File makes a harness on a fresh lock directory per case, with a short
// heartbeat. Abandon takes the key on a Locker of its own and closes it, as
// the kernel does for a process that dies; the file driver's own tests
// cover a real killed process.
func File(_ context.Context, t *testing.T) (conformance.Harness, error) {
	return &fileHarness{dir: t.TempDir()}, nil
}

const fileHeartbeat = 100 * time.Millisecond

type fileHarness struct{ dir string }

func (h *fileHarness) NewConnector(context.Context) (driver.Connector, error) {
	return file.FromDir(h.dir, file.WithHeartbeat(fileHeartbeat)), nil
}

// Vanish removes the lock file: the lock no longer excludes anyone, and the
// holder's heartbeat reports the loss.
func (h *fileHarness) Vanish(_ context.Context, key string) error {
	return os.Remove(filepath.Join(h.dir, file.FileName(key)))
}

func (h *fileHarness) Abandon(ctx context.Context, key string) error {
	l, err := file.FromDir(h.dir).Connect(ctx)
	if err != nil {
		return err
	}
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner()}); err != nil {
		l.Close()
		return err
	}
	time.AfterFunc(time.Second, func() { l.Close() }) // the holder "dies" a second later
	return nil
}

func (h *fileHarness) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{Fencing: true, LossWithin: 50 * fileHeartbeat, FreeWithin: 30 * time.Second}
}

func (h *fileHarness) Close() error { return nil }
