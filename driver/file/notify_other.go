//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package file

// startNotifyLocked: no inotify outside Linux; waiters get this Locker's
// own releases and package mutex's polling, and Renew finds losses.
func (l *locker) startNotifyLocked() {}

// watchEntryLocked: no inotify; a queued waiter of this Locker is woken
// directly by its releases (passOn), others poll.
func (l *locker) watchEntryLocked(path string) int { return -1 }

func (l *locker) unwatchEntryLocked(wd int) {}
