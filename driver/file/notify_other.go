//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package file

// startNotifyLocked: no cross-process wake-ups outside Linux; waiters get
// this Locker's own releases and package mutex's polling.
func (l *locker) startNotifyLocked() {}
