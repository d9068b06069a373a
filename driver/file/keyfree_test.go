//go:build linux

package file_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
)

// secretKey is a key in the shape of customer data. Its lock file's name
// begins with the same characters.
const secretKey = "customer-4711.jane.doe"

// checkKeyFree fails t if err, in any form a log prints it, carries the key
// or its lock file's name (which holds the key's first 64 bytes).
func checkKeyFree(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error; want one", what)
		return
	}
	name := file.FileName(secretKey)
	hash := strings.TrimSuffix(name[strings.LastIndexByte(name, '-')+1:], ".lock")
	text := err.Error() + "\n" + fmt.Sprintf("%+v", err)
	for _, form := range []string{name, secretKey, hash} {
		if strings.Contains(text, form) {
			t.Errorf("%s: error carries the key or its lock file's name (%q): %v", what, form, err)
			return
		}
	}
}

// TestErrorsLeaveKeyOut drives each error path of the driver with a
// distinctive key: every error, and every loss reported to OnLost, must
// leave out the key and its lock file's name, and keep its cause.
func TestErrorsLeaveKeyOut(t *testing.T) {
	ctx := context.Background()
	req := func() driver.AcquireRequest {
		return driver.AcquireRequest{Key: secretKey, Owner: driver.NewOwner(), Fencing: true}
	}

	t.Run("unwritable directory", func(t *testing.T) {
		dir := t.TempDir()
		l := connect(t, dir)
		var acqErr, inspErr error
		if os.Geteuid() == 0 {
			asNobody(func() {
				_, acqErr = l.Acquire(ctx, req())
				_, _, inspErr = l.Inspect(ctx, secretKey)
			})
			if acqErr == nil {
				t.Skip("cannot take root's file permissions away here (setfsuid refused)")
			}
		} else {
			if err := os.Chmod(dir, 0); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(dir, 0o755)
			_, acqErr = l.Acquire(ctx, req())
			_, _, inspErr = l.Inspect(ctx, secretKey)
		}
		for what, err := range map[string]error{"Acquire": acqErr, "Inspect": inspErr} {
			checkKeyFree(t, what, err)
			if !errors.Is(err, fs.ErrPermission) {
				t.Errorf("%s: %v; want an error matching fs.ErrPermission", what, err)
			}
			var pe *fs.PathError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), dir) {
				t.Errorf("%s: %v; want a *fs.PathError naming the directory", what, err)
			}
		}
	})

	t.Run("planted symlink", func(t *testing.T) {
		dir := t.TempDir()
		l := connect(t, dir)
		if err := os.Symlink(filepath.Join(t.TempDir(), "target"), filepath.Join(dir, file.FileName(secretKey))); err != nil {
			t.Fatal(err)
		}
		_, err := l.Acquire(ctx, req())
		checkKeyFree(t, "Acquire", err)
		if !errors.Is(err, syscall.ELOOP) {
			t.Errorf("Acquire: %v; want an error matching ELOOP", err)
		}
		_, _, err = l.Inspect(ctx, secretKey)
		checkKeyFree(t, "Inspect", err)
		if !errors.Is(err, syscall.ELOOP) {
			t.Errorf("Inspect: %v; want an error matching ELOOP", err)
		}
	})

	t.Run("directory in place of the lock file", func(t *testing.T) {
		dir := t.TempDir()
		l := connect(t, dir)
		if err := os.Mkdir(filepath.Join(dir, file.FileName(secretKey)), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := l.Acquire(ctx, req())
		checkKeyFree(t, "Acquire", err)
		if !errors.Is(err, syscall.EISDIR) {
			t.Errorf("Acquire: %v; want an error matching EISDIR", err)
		}
	})

	t.Run("FIFO in place of the lock file", func(t *testing.T) {
		dir := t.TempDir()
		l := connect(t, dir)
		if err := syscall.Mkfifo(filepath.Join(dir, file.FileName(secretKey)), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := l.Acquire(ctx, req())
		checkKeyFree(t, "Acquire", err)
		if !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("Acquire: %v; want an error matching driver.ErrInvalid", err)
		}
	})

	t.Run("corrupt token", func(t *testing.T) {
		dir := t.TempDir()
		l := connect(t, dir)
		if err := os.WriteFile(filepath.Join(dir, file.FileName(secretKey)), []byte("garbage\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := l.Acquire(ctx, req())
		checkKeyFree(t, "Acquire", err)
	})

	for _, vanish := range []struct {
		how string
		do  func(t *testing.T, dir, key string)
	}{{"removed", removeLockFile}, {"replaced", replaceLockFile}} {
		t.Run("lock file "+vanish.how, func(t *testing.T) {
			dir := t.TempDir()

			// Found by inotify: the cause OnLost gets.
			l := connect(t, dir)
			lost := make(chan error, 1)
			r := req()
			r.OnLost = func(err error) { lost <- err }
			if _, err := l.Acquire(ctx, r); err != nil {
				t.Fatal(err)
			}
			vanish.do(t, dir, secretKey)
			select {
			case err := <-lost:
				checkKeyFree(t, "OnLost", err)
			case <-time.After(wait):
				t.Fatal("OnLost not called")
			}
			l.Close()

			// Found by Renew, then by Release, with no inotify to find it
			// first.
			for _, by := range []string{"Renew", "Release"} {
				l = open(t, file.FromDirWithoutNotify(dir))
				r = req()
				if _, err := l.Acquire(ctx, r); err != nil {
					t.Fatal(err)
				}
				vanish.do(t, dir, secretKey)
				var err error
				if by == "Renew" {
					batch := []driver.Renewal{{Key: secretKey, Owner: r.Owner}}
					l.Renew(ctx, batch)
					err = batch[0].Err
				} else {
					err = l.Release(ctx, secretKey, r.Owner)
				}
				checkKeyFree(t, by, err)
				if !errors.Is(err, driver.ErrNotHeld) {
					t.Errorf("%s: %v; want an error matching driver.ErrNotHeld", by, err)
				}
			}
		})
	}

	// A Renew that cannot tell (the directory cannot be searched) says why,
	// without the key, and does not claim the grant lost.
	t.Run("Renew cannot tell", func(t *testing.T) {
		dir := t.TempDir()
		l := connect(t, dir)
		r := req()
		if _, err := l.Acquire(ctx, r); err != nil {
			t.Fatal(err)
		}
		batch := []driver.Renewal{{Key: secretKey, Owner: r.Owner}}
		if err := os.Chmod(dir, 0); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 {
			asNobody(func() { l.Renew(ctx, batch) })
		} else {
			l.Renew(ctx, batch)
		}
		os.Chmod(dir, 0o755)
		if batch[0].Err == nil && os.Geteuid() == 0 {
			t.Skip("cannot take root's file permissions away here (setfsuid refused)")
		}
		err := batch[0].Err
		checkKeyFree(t, "Renew", err)
		if !errors.Is(err, fs.ErrPermission) || errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("Renew: %v; want an error matching fs.ErrPermission and not driver.ErrNotHeld", err)
		}
		batch[0].Err = nil
		l.Renew(ctx, batch)
		if batch[0].Err != nil {
			t.Errorf("Renew with the directory searchable again: %v", batch[0].Err)
		}
	})
}

// asNobody runs fn on an OS thread whose filesystem uid is nobody's, so
// that root loses its right to open any file (the kernel drops
// CAP_DAC_OVERRIDE with fsuid 0). The thread ends with fn's goroutine:
// it is never unlocked, so no other goroutine runs with that fsuid.
func asNobody(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		syscall.Setfsuid(65534)
		fn()
	}()
	<-done
}
