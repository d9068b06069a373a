//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
	"github.com/mutexkit/mutexkit/mutex"
)

// BenchmarkUncontended is one TryLock and one Unlock of a key nobody else
// wants (nobody waits), through the Locker (Acquire, Release) and through
// package mutex: what the wait queue costs when it is empty. dir=tmpfs
// (/dev/shm) leaves out the fsync of the fencing token, which dominates on
// a disk; dir=default is file.DefaultDir().
func BenchmarkUncontended(b *testing.B) {
	dirs := []struct{ name, dir string }{{"tmpfs", "/dev/shm"}, {"default", file.DefaultDir()}}
	for _, d := range dirs {
		b.Run("dir="+d.name, func(b *testing.B) {
			if err := os.MkdirAll(d.dir, 0o755); err != nil {
				b.Skip(err)
			}
			dir, err := os.MkdirTemp(d.dir, "mutexkit-bench")
			if err != nil {
				b.Skip(err)
			}
			b.Cleanup(func() { os.RemoveAll(dir) })
			b.Run("api=locker", func(b *testing.B) { uncontendedLocker(b, dir) })
			b.Run("api=mutex", func(b *testing.B) { uncontendedMutex(b, dir) })
		})
	}
}

func uncontendedLocker(b *testing.B, dir string) {
	ctx := context.Background()
	l, err := file.FromDir(dir).Connect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	key := "bench-locker-" + strconv.Itoa(os.Getpid())
	defer os.Remove(filepath.Join(dir, file.FileName(key)))
	b.ReportAllocs()
	for b.Loop() {
		o := driver.NewOwner()
		if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: o}); err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx, key, o); err != nil {
			b.Fatal(err)
		}
	}
}

func uncontendedMutex(b *testing.B, dir string) {
	ctx := context.Background()
	c := mutex.NewClient(file.FromDir(dir))
	defer c.Close()
	m := c.NewMutex("bench-mutex-" + strconv.Itoa(os.Getpid()))
	lease, err := m.TryLock(ctx) // connects
	if err != nil {
		b.Fatal(err)
	}
	if err := lease.Unlock(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		lease, err := m.TryLock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := lease.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
