package file

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setTimes sets f's access and modification times to ns nanoseconds after
// the epoch, through its descriptor: futimens(2), which is utimensat(2)
// with no path. syscall.Futimes would go through /proc/self/fd, which a
// container or chroot may lack.
func setTimes(f *os.File, ns int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	ts := [2]unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, fd, 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
		if e != 0 {
			serr = e
		}
	}); err != nil {
		return err
	}
	return serr
}
