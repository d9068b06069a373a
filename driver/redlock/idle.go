package redlock

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Connections the server closed while they sat idle. A server's timeout,
// or a proxy's or NAT's idle cut-off, closes a pooled connection without
// the pool knowing; the next call on it would fail with EOF while the
// server is up. Two defences:
//
//   - The pools the driver makes check a connection that sat idle for
//     idleCheckAfter or longer as they hand it out: a read of its socket
//     that does not wait (no round trip). A closed or reset socket, or one
//     with bytes nobody asked for, is dropped and the pool takes the next
//     or dials. A connection used within idleCheckAfter costs nothing more.
//   - Any call that fails because the server had closed its connection
//     (EOF, a reset: peerClosed) runs once more on a fresh connection,
//     within the call's bound. This covers the application's pools
//     (FromPools), which the driver does not configure, a close that
//     raced the check, and a pipelined connection that broke under a
//     call. Both transports do it (transport.go), for a lone command and
//     for a batch. Every call the driver makes may be repeated: an acquire
//     recognises its owner's grant, a release or renewal compares the
//     record, an inspection reads.

// idleCheckAfter is how long a pooled connection may idle before the pool
// checks it: below a second, no server timeout can have passed.
const idleCheckAfter = time.Second

// peerClosed reports a failure of the connection that says the other end
// closed it (rather than a timeout, which may mean the server is down or
// paused, or a reply error from a live server).
func peerClosed(err error) bool {
	return err != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED))
}

// checkedConn is a connection of a pool the driver made, with its socket,
// so that the pool can check it after it idled.
type checkedConn struct {
	redis.ConnWithTimeout
	nc net.Conn // the TCP socket, under TLS if any
}

// testOnBorrow is the pools' TestOnBorrow: nothing for a connection used
// within idleCheckAfter; a read that does not wait otherwise.
func testOnBorrow(c redis.Conn, lastUsed time.Time) error {
	if time.Since(lastUsed) < idleCheckAfter {
		return nil
	}
	if cc, ok := c.(*checkedConn); ok {
		return sockGone(cc.nc)
	}
	return nil
}

// fresh dials a connection for a call's second try, bounded by deadline:
// the pool might hand out another connection that died the same way. An
// application's pool without a dial function gives one of its own.
func (p *pooled) fresh(ctx context.Context, deadline time.Time) (redis.Conn, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if p.dial == nil {
		return p.pool.GetContext(ctx)
	}
	return p.dial(ctx)
}
