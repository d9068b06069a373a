//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package file

// startNotifyLocked: no inotify outside Linux; waiters get this Locker's
// own releases and package mutex's polling, and Renew finds losses.
func (l *locker) startNotifyLocked() {}
