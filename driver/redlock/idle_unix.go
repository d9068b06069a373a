//go:build unix

package redlock

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"
)

var errUnasked = errors.New("redlock: bytes on an idle connection")

// sockGone reads the socket once without waiting: nothing to read means
// the connection is alive; end of file, a reset, or bytes no call asked
// for mean it is not. (As go-sql-driver/mysql checks its connections.)
func sockGone(nc net.Conn) error {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	// The last call's read deadline has passed: the read would fail on it
	// without looking. The next call sets its own.
	if err := nc.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	var gone error
	var buf [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, err := syscall.Read(int(fd), buf[:])
		switch {
		case n == 0 && err == nil:
			gone = io.EOF
		case n > 0:
			gone = errUnasked
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
		default:
			gone = err
		}
		return true // never wait for readability
	})
	if err != nil {
		return err
	}
	return gone
}
