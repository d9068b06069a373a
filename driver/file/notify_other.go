//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package file

// startNotifyLocked: no inotify outside Linux; Watch refuses, waiters
// poll, and Renew finds losses.
func (l *locker) startNotifyLocked() {}

// watchEntryLocked: no inotify; waiters poll (Watch refuses).
func (l *locker) watchEntryLocked(path string) int { return -1 }

func (l *locker) unwatchEntryLocked(wd int) {}
