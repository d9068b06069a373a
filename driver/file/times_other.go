//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package file

import (
	"os"
	"syscall"
)

// setTimes sets f's access and modification times to ns nanoseconds after
// the epoch, through its descriptor (futimes(2) is a system call here).
func setTimes(f *os.File, ns int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	tv := syscall.NsecToTimeval(ns)
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Futimes(int(fd), []syscall.Timeval{tv, tv}) }); err != nil {
		return err
	}
	return serr
}
