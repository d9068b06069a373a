//go:build !unix

package redlock

import "net"

// sockGone cannot read a socket without waiting here: the second try on
// a fresh connection (peerClosed) is the only defence.
func sockGone(net.Conn) error { return nil }
