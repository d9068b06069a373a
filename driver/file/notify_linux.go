package file

import (
	"encoding/binary"
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mutexkit/mutexkit/driver"
)

// notifyMask: a holder's release closes its O_RDWR fd (IN_CLOSE_WRITE), and
// so does the death of its process; a removed or renamed lock file frees
// the key too, and loses the grant of its holder here, as does a renamed
// directory (IN_MOVE_SELF). Attempts open read-only, so they raise none of
// these.
const (
	notifyMask = syscall.IN_CLOSE_WRITE | syscall.IN_DELETE | syscall.IN_MOVED_FROM |
		syscall.IN_MOVED_TO | syscall.IN_MOVE_SELF | syscall.IN_ONLYDIR
	unlinked = syscall.IN_DELETE | syscall.IN_MOVED_FROM | syscall.IN_MOVED_TO
	checkAll = syscall.IN_Q_OVERFLOW | syscall.IN_IGNORED | syscall.IN_MOVE_SELF
)

// startNotifyLocked starts the Locker's inotify reader, which wakes waiters
// and reports held keys whose lock file went (OnLost). On failure (for
// example fs.inotify.max_user_instances reached) waiters get only this
// Locker's wake-ups and rely on package mutex's polling, and losses are
// found by Renew.
func (l *locker) startNotifyLocked() {
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		return
	}
	wd, err := syscall.InotifyAddWatch(fd, l.dir, notifyMask)
	if err != nil {
		syscall.Close(fd)
		return
	}
	// A non-blocking fd goes to the runtime poller, so Close from another
	// goroutine ends a blocked Read.
	f := os.NewFile(uintptr(fd), "inotify")
	l.notify, l.notifyFD, l.dirWD = f, fd, wd
	l.wg.Add(1)
	go l.readNotify(f)
}

// watchEntryLocked watches a queue entry of this Locker for the
// IN_CLOSE_WRITE by which a release wakes it, and returns the watch, or -1
// without inotify. Only this Locker watches the entry, so a release wakes
// one process. Callers hold mu.
//
// The path is not followed (an entry replaced by a symlink), and a path
// that names an inode this instance watches already (the directory,
// another entry) must not change that watch's mask: IN_MASK_CREATE makes
// that EEXIST from Linux 4.18; older kernels ignore the flag and return the
// watch in use, which is refused, and the directory's mask restored.
func (l *locker) watchEntryLocked(path string) int {
	if l.notify == nil {
		return -1
	}
	wd, err := syscall.InotifyAddWatch(l.notifyFD, path, syscall.IN_CLOSE_WRITE|unix.IN_DONT_FOLLOW|unix.IN_MASK_CREATE)
	switch {
	case err != nil: // EEXIST, fs.inotify.max_user_watches: woken by polling
		return -1
	case wd == l.dirWD:
		syscall.InotifyAddWatch(l.notifyFD, l.dir, notifyMask)
		return -1
	case l.byWD[wd] != nil:
		return -1
	}
	return wd
}

// unwatchEntryLocked removes an entry's watch. Callers hold mu.
func (l *locker) unwatchEntryLocked(wd int) {
	if l.notify != nil {
		syscall.InotifyRmWatch(l.notifyFD, uint32(wd))
	}
}

func (l *locker) readNotify(f *os.File) {
	defer l.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if !errors.Is(err, os.ErrClosed) {
				// Nothing more will be seen: let waiters fall back to polling now.
				l.mu.Lock()
				l.wakeAllLocked()
				l.mu.Unlock()
			}
			return
		}
		l.dispatch(buf[:n])
	}
}

// dispatch wakes the watchers of each event's file name and checks the
// grant on a file that was removed or renamed; a queue overflow, a lost
// watch or a renamed directory wakes all and checks every grant. An event
// on a queue entry wakes its owner's watchers.
func (l *locker) dispatch(b []byte) {
	var check []*hold
	all := false
	l.mu.Lock()
	for len(b) >= syscall.SizeofInotifyEvent {
		wd := int(int32(binary.NativeEndian.Uint32(b[0:4])))
		mask := binary.NativeEndian.Uint32(b[4:8])
		nameLen := int(binary.NativeEndian.Uint32(b[12:16]))
		end := syscall.SizeofInotifyEvent + nameLen
		if end > len(b) {
			break
		}
		name := b[syscall.SizeofInotifyEvent:end]
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		b = b[end:]
		if wd != l.dirWD && mask&syscall.IN_Q_OVERFLOW == 0 {
			// A queue entry's watch (or the IN_IGNORED of one removed).
			if e := l.byWD[wd]; e != nil && mask&syscall.IN_CLOSE_WRITE != 0 {
				l.wakeOwnerLocked(e.lockName, e.owner)
			}
			continue
		}
		switch {
		case mask&syscall.IN_ISDIR != 0 && mask&unlinked != 0:
			// A queue directory removed: no lock file went.
		case mask&checkAll != 0:
			l.wakeAllLocked()
			all = true
		case mask&unlinked != 0:
			l.wakeNamedLocked(name)
			for _, h := range l.held { // rare: only tampering unlinks a lock file
				if h.name == string(name) {
					check = append(check, h)
				}
			}
		default:
			l.wakeNamedLocked(name)
		}
	}
	if all {
		check = check[:0]
		for _, h := range l.held {
			check = append(check, h)
		}
	}
	l.mu.Unlock()
	l.checkLost(check)
}

// wakeNamedLocked is wakeLocked for a file name in an event: the name
// becomes a string (an allocation) only when someone watches the file.
// Callers hold mu.
func (l *locker) wakeNamedLocked(name []byte) {
	if len(l.watchers[string(name)]) > 0 {
		l.wakeLocked(string(name))
	}
}

// wakeOwnerLocked wakes owner's watchers of lock file name: its entry was
// woken.
func (l *locker) wakeOwnerLocked(name string, owner driver.Owner) {
	for w := range l.watchers[name] {
		if w.owner == owner {
			w.send()
		}
	}
}

// checkLost drops those of holds whose lock file was removed or replaced,
// and reports each to its OnLost: an early report of what Renew would find.
func (l *locker) checkLost(holds []*hold) {
	for _, h := range holds {
		l.mu.Lock()
		lost := false
		if l.held[h.key] == h { // not released or closed meanwhile
			lost, _, _ = h.replaced()
		}
		if lost {
			l.dropLocked(h)
		}
		l.mu.Unlock()
		if lost && h.onLost != nil {
			h.onLost(lostError(l.dir))
		}
	}
}
