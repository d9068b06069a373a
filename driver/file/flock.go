//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/mutexkit/mutexkit/driver"
)

// maxReplacedRetries bounds how often one attempt starts over when the lock
// file is replaced between opening and locking it (only under tampering).
const maxReplacedRetries = 8

var errReplaced = errors.New("lock file replaced during the attempt")

// hold is one granted key.
type hold struct {
	key    string
	owner  driver.Owner
	name   string
	path   string
	lockF  *os.File // O_RDONLY: carries the flock
	rwF    *os.File // O_RDWR: writes the token; its close signals the release
	id     fileID   // the locked inode
	grant  driver.Grant
	onLost func(error)
}

// close releases the flock, then closes the writable fd: watchers that see
// its IN_CLOSE_WRITE find the key already free.
func (h *hold) close() {
	h.lockF.Close()
	if h.rwF != nil {
		h.rwF.Close()
	}
}

type fileID struct{ dev, ino uint64 }

func idOf(fi fs.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}
	}
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}
}

// links is fi's link count, or 0 if unknown.
func links(fi fs.FileInfo) uint64 {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	return uint64(st.Nlink)
}

// checkDir checks that dir is a directory on a filesystem fit for flock.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("file: lock directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("file: %s is not a directory: %w", dir, driver.ErrInvalid)
	}
	return checkFS(dir)
}

// openLockFile opens the lock file at path (in dir), making it if missing,
// and reports whether its key has a wait queue: the queue's mark is a second
// link to the lock file (see markQueue), so the link count that the fstat
// checking for a regular file reads anyway tells, at no extra cost. Attempts
// open the file read-only (flock needs no write access), so a failed
// attempt's close is no IN_CLOSE_WRITE and does not wake other waiters; only
// the winner opens it read-write. Errors name dir, never the file (see
// keyFree).
func openLockFile(dir, path string) (lf *os.File, queued bool, err error) {
	lf, err = os.OpenFile(path, os.O_RDONLY|os.O_CREATE|openFlags, 0o644)
	if err != nil {
		return nil, false, fmt.Errorf("file: open lock file: %w", keyFree(err))
	}
	fi, err := lf.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		lf.Close()
		return nil, false, fmt.Errorf("file: a lock file in %s is not a regular file: %w", dir, driver.ErrInvalid)
	}
	return lf, links(fi) > 1, nil
}

// lockOpened takes the flock on lf, which openLockFile opened at path, and
// closes lf if it fails.
func lockOpened(dir, path string, lf *os.File) (*hold, error) {
	if err := flock(lf, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		if isWouldBlock(err) {
			return nil, errLockedElsewhere
		}
		return nil, fmt.Errorf("file: flock a lock file in %s: %w", dir, keyFree(err))
	}
	lfi, err := lf.Stat()
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("file: %w", keyFree(err))
	}
	id := idOf(lfi)
	// Opening by path again also checks that the path still names the
	// inode we locked: if it was removed or replaced after our open, our
	// flock excludes no one.
	rw, err := os.OpenFile(path, os.O_RDWR|openFlags, 0)
	if err != nil {
		lf.Close()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errReplaced
		}
		return nil, fmt.Errorf("file: open lock file for writing: %w", keyFree(err))
	}
	h := &hold{lockF: lf, rwF: rw, id: id, path: path}
	rfi, err := rw.Stat()
	if err != nil {
		h.close()
		return nil, fmt.Errorf("file: %w", keyFree(err))
	}
	if idOf(rfi) != id {
		h.close()
		return nil, errReplaced
	}
	return h, nil
}

// openFlags guard against what another user may plant in a shared
// directory (the default is under $TMPDIR): a symlink would make us write
// tokens into its target, and opening a FIFO read-only would block.
const openFlags = syscall.O_NOFOLLOW | syscall.O_NONBLOCK

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Flock(int(fd), how)
			if ferr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// replaced reports whether h's path no longer names the inode h locked. An
// open inode cannot be reused, so equal dev and ino mean the same file. An
// error other than a missing file (EIO, EACCES) means it cannot tell. The
// same lstat tells whether the key has a wait queue (the queue's mark is a
// second link to the lock file), so a release with nobody waiting looks no
// further.
func (h *hold) replaced() (lost, queued bool, err error) {
	fi, err := os.Lstat(h.path) // a symlink put in its place is a replacement
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return true, false, nil
	case err != nil:
		return false, false, err
	}
	return idOf(fi) != h.id, links(fi) > 1, nil
}
