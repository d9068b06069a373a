//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mutexkit/mutexkit/driver"
)

// The wait queue of a key is a directory beside its lock file, named like
// it with ".queue" for ".lock". It holds one entry file per waiting owner,
// "<stamp>-<owner>.w": the stamp is the host's monotonic clock at the
// owner's first waiting attempt, zero-padded so that names sort in arrival
// order. The waiter's Locker keeps its entry open with an exclusive flock
// for as long as it waits, so anyone can tell a live waiter from a dead one
// with a non-blocking flock of its own, at once: the kernel drops the flock
// of a killed process. An entry is also passed over once its mtime, which
// each attempt of its owner sets to the monotonic clock (not the wall
// clock, which steps), is more than driver.QueueHold from it (a process
// that lives but stopped asking). A release wakes the live head by
// opening its entry for writing, which is an IN_CLOSE_WRITE that only the
// head's Locker watches.
//
// While the directory holds entries it also holds the mark, a hard link to
// the lock file, which makes the lock file's link count 2: attempts and
// releases read the link count with the fstat and lstat they make anyway,
// so with nobody waiting the queue costs no system call. The mark is made
// before an entry and removed only with the empty directory, both under the
// directory's flock (lockQueue): an attempt that saw no mark looked before
// the entry appeared.
const (
	queueSuffix = ".queue"
	entrySuffix = ".w"
	tempSuffix  = ".t"   // an entry being made: not yet flocked, so not yet in the queue
	markName    = "link" // the mark, a link to the lock file
	stampDigits = 20
	entryLen    = stampDigits + 1 + 32 + len(entrySuffix)

	// queueLockWait bounds the wait for a queue's flock when a waiter
	// takes a place: its holders keep it for a few system calls.
	queueLockWait = 100 * time.Millisecond
)

// errKept: the key is free, but kept for the waiter at the head of its queue.
var errKept = fmt.Errorf("file: kept for a waiting owner: %w", driver.ErrLocked)

var errNoLinks = errors.New("the filesystem makes or counts no hard links")

// linkFile makes the mark; tests replace it to play a filesystem without
// hard links.
var linkFile = os.Link

// queueDir returns the path of the queue directory for the lock file name
// (dir is absolute and clean: Connect made it so).
func queueDir(dir, lockName string) string {
	return dir + string(filepath.Separator) + strings.TrimSuffix(lockName, ".lock") + queueSuffix
}

func entryName(stamp uint64, owner driver.Owner) string {
	return fmt.Sprintf("%0*d-%s%s", stampDigits, stamp, owner, entrySuffix)
}

// nameStamp returns the stamp in an entry's name, or in the name of an
// entry being made.
func nameStamp(name string) (uint64, bool) {
	if len(name) != entryLen || name[stampDigits] != '-' {
		return 0, false
	}
	n, err := strconv.ParseUint(name[:stampDigits], 10, 64)
	return n, err == nil
}

// entryOwner reports whether name is an entry's name, and whose.
func entryOwner(name string) (driver.Owner, bool) {
	var o driver.Owner
	if len(name) != entryLen || !strings.HasSuffix(name, entrySuffix) || name[stampDigits] != '-' {
		return o, false
	}
	n, err := hex.Decode(o[:], []byte(name[stampDigits+1:stampDigits+33]))
	return o, err == nil && n == len(o)
}

// entry is a place in a key's queue held by an owner of this Locker.
type entry struct {
	key, lockName string
	qdir, path    string
	owner         driver.Owner
	f             *os.File  // read-only, flocked exclusively: the waiter is alive
	wd            int       // inotify watch on the entry, or -1
	last          time.Time // the owner's last attempt
	// head is set when the owner's last attempt found itself at the head
	// and the key held: a release of the lock file then wakes it too, so
	// a holder that dies (and wakes no one) does not stall the head.
	head bool
}

// stamp is the host's monotonic clock, shared by its processes and never
// stepped, unlike the wall clock. It orders entries (their names) and ages
// them (their mtimes).
func stamp() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(clockMonotonic, &ts); err != nil {
		return uint64(time.Now().UnixNano())
	}
	return uint64(ts.Nano())
}

// queueHead returns the name of the live entry at the head of qdir's
// queue ("" if none), and whether it is self's. Dead and stale entries it
// meets on the way are removed, and so is an empty queue with its mark.
func queueHead(qdir string, self driver.Owner) (head string, selfHead bool, err error) {
	d, err := os.OpenFile(qdir, os.O_RDONLY|syscall.O_DIRECTORY|openFlags, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if errors.Is(err, fs.ErrNotExist) { // removed, empty, since the open
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	slices.Sort(names) // arrival order
	now := stamp()
	left := len(names)
	for _, name := range names {
		if name == markName {
			left--
			continue
		}
		o, isEntry := entryOwner(name)
		if isEntry && o == self {
			return name, true, nil
		}
		if !isEntry {
			// An entry being made is judged by the age in its name alone:
			// a flock, even a shared one, could make its maker's fail.
			if st, ok := nameStamp(name); ok && strings.HasSuffix(name, tempSuffix) && !aged(now, st) {
				continue
			}
			os.Remove(filepath.Join(qdir, name)) // its maker died, or not ours
			left--
			continue
		}
		live, err := probe(filepath.Join(qdir, name), now)
		if err != nil {
			return "", false, err
		}
		if live {
			return name, false, nil
		}
		left--
	}
	if left == 0 {
		clearQueue(qdir)
	}
	return "", false, nil
}

// probe reports whether the entry at path belongs to a live waiter, and
// removes it if not: unflocked (its process died), or untouched for
// QueueHold. Its maker flocked it before it got its name, so the shared
// flock tried here cannot make the maker's fail.
func probe(path string, now uint64) (live bool, err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|openFlags, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // its owner left
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	stale := aged(now, uint64(fi.ModTime().UnixNano()))
	err = flock(f, syscall.LOCK_SH|syscall.LOCK_NB)
	switch {
	case err == nil, isWouldBlock(err) && stale:
		os.Remove(path)
		return false, nil
	case err == nil || isWouldBlock(err):
		return true, nil
	}
	return false, err
}

// aged reports whether the stamp then is more than QueueHold from now,
// either way: one ahead of the monotonic clock was not set by it (a wall
// clock time, as older versions set), and would never age.
func aged(now, then uint64) bool {
	const hold = uint64(driver.QueueHold)
	return then+hold < now || then > now+hold
}

func isWouldBlock(err error) bool {
	return errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EAGAIN)
}

// makeEntry puts owner into qdir's queue, under the queue's flock: it
// marks the lock file at lockPath as queued, then creates the entry under
// a temporary name, flocks it and renames it into place, so that a prober
// never sees an unflocked entry of a live waiter. On failure the mark goes
// too, unless others wait.
func makeEntry(ctx context.Context, qdir, lockPath string, owner driver.Owner) (*os.File, string, error) {
	d, err := lockQueue(ctx, qdir, true)
	if err != nil {
		return nil, "", err
	}
	defer d.Close() // unlocks
	err = markQueue(qdir, lockPath)
	var f *os.File
	var path string
	if err == nil {
		f, path, err = newEntry(qdir, owner)
	}
	if err != nil {
		clearLocked(d, qdir) // made for this entry, most likely
		return nil, "", err
	}
	return f, path, nil
}

// newEntry makes owner's entry in qdir (makeEntry, under the queue's flock).
func newEntry(qdir string, owner driver.Owner) (*os.File, string, error) {
	now := stamp()
	path := filepath.Join(qdir, entryName(now, owner))
	tmp := strings.TrimSuffix(path, entrySuffix) + tempSuffix
	f, err := os.OpenFile(tmp, os.O_RDONLY|os.O_CREATE|os.O_EXCL|openFlags, 0o644)
	if err != nil {
		return nil, "", err
	}
	err = setTimes(f, int64(now)) // its age: a wall clock mtime is passed over
	if err == nil {
		err = flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, "", err
	}
	return f, path, nil
}

// lockQueue opens the queue directory qdir (making it first with create)
// and takes its flock, which orders the making of entries and the mark
// with the removal of an empty queue. It waits up to queueLockWait for the
// flock with create (or until ctx ends: ctx.Err()), not at all without. A
// directory removed before the flock was had is made again (create) or
// reported missing.
func lockQueue(ctx context.Context, qdir string, create bool) (*os.File, error) {
	for attempt := 0; attempt <= maxReplacedRetries; attempt++ {
		if create {
			if err := os.Mkdir(qdir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, err
			}
		}
		d, err := os.OpenFile(qdir, os.O_RDONLY|syscall.O_DIRECTORY|openFlags, 0)
		if errors.Is(err, fs.ErrNotExist) && create {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := flockQueue(ctx, d, create); err != nil {
			d.Close()
			return nil, err
		}
		// Only the flock's holder removes the directory: once it is had
		// on the directory the path names, the directory stays.
		fi, err := os.Lstat(qdir)
		own, err2 := d.Stat()
		if err == nil && err2 == nil && os.SameFile(fi, own) {
			return d, nil
		}
		d.Close()
		if !create {
			return nil, fs.ErrNotExist
		}
	}
	return nil, errReplaced
}

// flockQueue takes d's flock, trying again for up to queueLockWait if wait,
// or until ctx ends.
func flockQueue(ctx context.Context, d *os.File, wait bool) error {
	deadline := time.Now().Add(queueLockWait)
	for pause := 20 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		err := flock(d, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil || !wait || !isWouldBlock(err) || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// markQueue makes the queue's mark, a hard link to the lock file at
// lockPath in the queue qdir, unless it is there already, and checks that
// the lock file's link count shows it. The caller holds the queue's flock.
func markQueue(qdir, lockPath string) error {
	mark := filepath.Join(qdir, markName)
	for attempt := 0; ; attempt++ {
		if err := linkFile(lockPath, mark); err != nil && !errors.Is(err, fs.ErrExist) {
			if linksUnsupported(err, lockPath) {
				return errNoLinks
			}
			return err
		}
		fi, err := os.Lstat(lockPath)
		if err != nil {
			return err
		}
		own, err := os.Lstat(mark)
		if err != nil {
			return err
		}
		switch {
		case os.SameFile(fi, own) && links(fi) > 1:
			return nil
		case os.SameFile(fi, own):
			// A filesystem that counts no links: attempts would not see
			// the mark, so no one may queue.
			os.Remove(mark)
			return errNoLinks
		case attempt > 0:
			return errReplaced
		}
		// A link to a lock file that was since replaced marks nothing.
		if err := os.Remove(mark); err != nil {
			return err
		}
	}
}

// remarkQueue makes the mark of the queue qdir again if no other process
// holds the queue's flock (else the next attempt does).
func remarkQueue(qdir, lockPath string) {
	d, err := lockQueue(context.Background(), qdir, false) // does not wait
	if err != nil {
		return
	}
	defer d.Close() // unlocks
	markQueue(qdir, lockPath)
}

// linksUnsupported reports whether a failed link of the lock file at
// lockPath says that the filesystem makes no hard links: ENOTSUP, or EPERM
// (as vfat says) on a lock file of our own; on another user's file EPERM
// may be fs.protected_hardlinks, which refuses that file alone.
func linksUnsupported(err error, lockPath string) bool {
	if errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EOPNOTSUPP) {
		return true
	}
	if !errors.Is(err, syscall.EPERM) {
		return false
	}
	fi, err := os.Lstat(lockPath)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// clearQueue removes the queue directory qdir and its mark if the queue is
// empty, under the queue's flock, so that no waiter takes a place in
// between. If another process holds the flock (it is taking a place) the
// mark stays: a mark on an empty queue only costs attempts a look, and the
// next attempt or release that looks removes it.
func clearQueue(qdir string) {
	d, err := lockQueue(context.Background(), qdir, false) // does not wait
	if err != nil {
		return
	}
	defer d.Close() // unlocks, after the removal
	clearLocked(d, qdir)
}

// clearLocked is clearQueue under the queue's flock, held through d.
func clearLocked(d *os.File, qdir string) {
	names, err := d.Readdirnames(-1)
	if err != nil {
		return
	}
	for _, name := range names {
		if name != markName {
			return // an entry, or one being made by a process that died
		}
	}
	// The mark goes first: an attempt that sees the lock file unmarked
	// finds no entry, and a waiter marks again in a new directory.
	if err := os.Remove(filepath.Join(qdir, markName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return
	}
	os.Remove(qdir)
}

// touch records an attempt in the entry's mtime (the monotonic clock), and
// reports whether the entry is still in the queue: a prober removes one it
// finds stale.
func (e *entry) touch() (inQueue bool) {
	fi, err := os.Lstat(e.path)
	own, err2 := e.f.Stat()
	if err != nil || err2 != nil || !os.SameFile(fi, own) {
		return false
	}
	// A failure (EIO, say) leaves the entry with its last stamp: probers
	// pass it over QueueHold after the last touch that worked.
	setTimes(e.f, int64(stamp()))
	return true
}

// wakeEntry wakes the owner of the entry at path: opening it for writing
// and closing it is an IN_CLOSE_WRITE, seen by the inotify watch its
// Locker keeps on it.
func wakeEntry(path string) {
	if f, err := os.OpenFile(path, os.O_WRONLY|openFlags, 0); err == nil {
		f.Close()
	}
}
