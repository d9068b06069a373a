package redlock

import (
	"net"

	"github.com/mutexkit/mutexkit/driver"
)

// The one door from package redlock_test to the driver's internals.

// WithConnWrapper wraps the socket of every pipelined connection, so
// tests can count writes.
func WithConnWrapper(wrap func(net.Conn) net.Conn) Option {
	return func(c *config) { c.wrapConn = wrap }
}

// WithPipeAlways sends every call through the pipe, a call alone too
// (which otherwise takes a pooled connection).
func WithPipeAlways() Option {
	return func(c *config) { c.pipeAlways = true }
}

// WithSendAll sends every waiting attempt to the server: none is answered
// by the client (queue.go), to measure what that saves.
func WithSendAll() Option {
	return func(c *config) { c.sendAll = true }
}

// Settle waits for the late answers of l's calls that returned at quorum
// (none may be under way on l meanwhile).
func Settle(l driver.Locker) { l.(*locker).bg.Wait() }

// Waits returns how many owners l keeps a wait for.
func Waits(l driver.Locker) int {
	ws := &l.(*locker).waits
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.byOwn)
}

// Subscribed returns how many of l's subscriptions are confirmed and up.
func Subscribed(l driver.Locker) int { return int(l.(*locker).watch.up.Load()) }

// WithoutListQueue runs the sorted-set queue (queue.go) on one server
// too, as it runs with replica acknowledgements or on a Redis Cluster.
func WithoutListQueue() Option {
	return func(c *config) { c.listQueue = false }
}

// RefreshScript is the list waiter's refresh script (list.go), for tests
// that run a late copy of it.
func RefreshScript() string { return listRefreshScript.src }
