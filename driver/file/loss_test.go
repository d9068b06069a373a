//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
	"github.com/mutexkit/mutexkit/mutex"
)

// lossBound is the documented bound on reporting a removed or replaced
// lock file: one heartbeat of the client (1 s by default), with room for
// a busy machine. Through inotify it is reported at once.
const lossBound = 5 * time.Second

// TestLossThroughMutex: a lease whose lock file is removed or replaced is
// reported lost: by inotify (Linux), and without it by package mutex's
// verification of the grant every heartbeat (Renew with TTL 0).
func TestLossThroughMutex(t *testing.T) {
	for _, notify := range []bool{true, false} {
		for _, vanish := range []struct {
			how string
			do  func(t *testing.T, dir, key string)
		}{{"removed", removeLockFile}, {"replaced", replaceLockFile}} {
			name := vanish.how
			if !notify {
				name += " without inotify"
			}
			t.Run(name, func(t *testing.T) {
				ctx := context.Background()
				dir := t.TempDir()
				var conn driver.Connector = file.FromDir(dir)
				if !notify {
					conn = file.FromDirWithoutNotify(dir)
				}
				client := mutex.NewClient(conn)
				defer client.Close()
				lease, err := client.NewMutex("k").TryLock(ctx)
				if err != nil {
					t.Fatal(err)
				}
				vanish.do(t, dir, "k")
				select {
				case <-lease.Done():
				case <-time.After(lossBound):
					t.Fatalf("loss not reported within %v", lossBound)
				}
				if err := lease.Err(); !errors.Is(err, mutex.ErrLockLost) {
					t.Fatalf("Err() = %v, want ErrLockLost", err)
				}
				if err := lease.Unlock(ctx); !errors.Is(err, mutex.ErrLockLost) {
					t.Fatalf("Unlock() = %v, want ErrLockLost", err)
				}
			})
		}
	}
}
