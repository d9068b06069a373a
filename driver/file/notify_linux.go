package file

import (
	"encoding/binary"
	"errors"
	"os"
	"syscall"
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
	if _, err := syscall.InotifyAddWatch(fd, l.dir, notifyMask); err != nil {
		syscall.Close(fd)
		return
	}
	// A non-blocking fd goes to the runtime poller, so Close from another
	// goroutine ends a blocked Read.
	f := os.NewFile(uintptr(fd), "inotify")
	l.notify = f
	l.wg.Add(1)
	go l.readNotify(f)
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
// watch or a renamed directory wakes all and checks every grant.
func (l *locker) dispatch(b []byte) {
	var check []*hold
	all := false
	l.mu.Lock()
	for len(b) >= syscall.SizeofInotifyEvent {
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
		switch {
		case mask&checkAll != 0:
			l.wakeAllLocked()
			all = true
		case mask&unlinked != 0:
			l.wakeLocked(string(name))
			for _, h := range l.held { // rare: only tampering unlinks a lock file
				if h.name == string(name) {
					check = append(check, h)
				}
			}
		default:
			l.wakeLocked(string(name))
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
