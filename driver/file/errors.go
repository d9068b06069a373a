//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file

import (
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/mutexkit/mutexkit/driver"
)

// Errors carry no key and no lock file name, which holds up to 64 bytes of
// the key: keys may hold customer data, and errors end up in logs. Errors
// about a lock file name the directory and lockFileDesc instead.
var (
	errHeldHere        = fmt.Errorf("file: held by another owner in this client: %w", driver.ErrLocked)
	errLockedElsewhere = fmt.Errorf("file: lock file held by another process or client: %w", driver.ErrLocked)
	errNotHeld         = fmt.Errorf("file: %w", driver.ErrNotHeld)
)

var errNoWatch = fmt.Errorf("file: no inotify here to watch releases by other processes: %w", driver.ErrUnimplemented)

func errClosed() error { return fmt.Errorf("file: locker: %w", driver.ErrClosed) }

// lockFileDesc stands for a lock file's name in errors.
const lockFileDesc = "<a key's lock file>"

// keyFree returns err, from an os call on a lock file, with the file's name
// left out: a *fs.PathError names the directory and lockFileDesc instead,
// and keeps Op and Err, so errors.Is(err, fs.ErrPermission) and errors.As
// to *fs.PathError still work. Other errors are returned as they are.
func keyFree(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return &fs.PathError{Op: pe.Op, Path: filepath.Join(filepath.Dir(pe.Path), lockFileDesc), Err: pe.Err}
	}
	return err
}

// queueDesc stands for a key's queue directory, or an entry in it, in errors.
const queueDesc = "<a key's wait queue>"

// queueFree is keyFree for an os call on a key's queue directory or an entry
// in it: the error names dir, the lock directory, and queueDesc.
func queueFree(dir string, err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return &fs.PathError{Op: pe.Op, Path: filepath.Join(dir, queueDesc), Err: pe.Err}
	}
	return err
}

func lostError(dir string) error {
	return fmt.Errorf("file: a lock file in %s was removed or replaced, so the lock no longer excludes anyone: %w", dir, driver.ErrNotHeld)
}
