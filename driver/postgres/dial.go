package postgres

import (
	"context"
	"net"
	"sync"
	"syscall"
	"time"
)

// dialer dials lock sessions with the configured TCP keepalive (and, on
// Linux, TCP_USER_TIMEOUT, which bounds data left unacknowledged), and
// remembers the last connection it made, so the session that gets it can
// force it closed if a statement hangs on a dead network.
type dialer struct {
	nd net.Dialer

	mu   sync.Mutex
	last net.Conn
}

func newDialer(cfg *config) *dialer {
	d := &dialer{nd: net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{
			Enable:   true,
			Idle:     cfg.keepIdle,
			Interval: cfg.keepIntvl,
			Count:    cfg.keepCount,
		},
	}}
	userTimeout := cfg.keepIdle + cfg.keepIntvl*time.Duration(cfg.keepCount)
	d.nd.Control = func(network, address string, c syscall.RawConn) error {
		if network != "tcp" && network != "tcp4" && network != "tcp6" {
			return nil
		}
		return setUserTimeout(c, userTimeout)
	}
	return d
}

func (d *dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d *dialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.nd.DialContext(ctx, network, address)
	if err == nil {
		d.mu.Lock()
		d.last = c
		d.mu.Unlock()
	}
	return c, err
}

// take returns and forgets the last connection dialed.
func (d *dialer) take() net.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.last
	d.last = nil
	return c
}
