package redlock

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/pipeline"
)

// pooledDial returns the dial function of a node's pooled connections
// (and of its subscription). The bound covers the whole dial: connect,
// TLS, and the AUTH, SELECT and CLIENT SETNAME round trips a paused server
// never answers. Each connection keeps its socket, which the pool checks
// after it idled (idle.go).
func (cfg *config) pooledDial(addr string, opts []redis.DialOption) func(context.Context) (redis.Conn, error) {
	dialer := &net.Dialer{Timeout: cfg.connectTimeout, KeepAlive: 5 * time.Minute}
	connectTimeout := cfg.connectTimeout
	return func(ctx context.Context) (redis.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		var nc net.Conn
		netDial := redis.DialContextFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			nc = c
			return c, err
		})
		conn, err := redis.DialContext(ctx, "tcp", addr, append(opts[:len(opts):len(opts)], netDial)...)
		if err != nil {
			return nil, err
		}
		cwt, ok := conn.(redis.ConnWithTimeout)
		if !ok {
			return conn, nil
		}
		return &checkedConn{ConnWithTimeout: cwt, nc: nc}, nil
	}
}

// pipeDial returns the dial function of a node's pipelined connections:
// TLS, AUTH, SELECT and CLIENT SETNAME as for pooled ones, all within
// connect_timeout and the caller's deadline, over a socket the pipe
// manages (wrap).
func (cfg *config) pipeDial(addr string, opts []redis.DialOption) pipeline.DialFunc {
	dialer := &net.Dialer{KeepAlive: 5 * time.Minute}
	testWrap := cfg.wrapConn
	connectTimeout := cfg.connectTimeout
	return func(ctx context.Context, wrap func(net.Conn) net.Conn) (redis.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		netDial := redis.DialContextFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if testWrap != nil {
				c = testWrap(c)
			}
			return wrap(c), nil
		})
		return redis.DialContext(ctx, "tcp", addr, append(opts[:len(opts):len(opts)], netDial)...)
	}
}

// dialOptions turns the configuration into redigo's; for a pipelined
// connection without a write timeout, as the pipe sets the socket's
// deadlines itself. Reading a CA file is the only I/O, and it is local.
func (cfg *config) dialOptions(pipelined bool) ([]redis.DialOption, error) {
	opts := []redis.DialOption{
		redis.DialConnectTimeout(cfg.connectTimeout),
		redis.DialTLSHandshakeTimeout(cfg.connectTimeout),
		redis.DialClientName("mutexkit"),
	}
	if cfg.password != "" {
		opts = append(opts, redis.DialPassword(cfg.password))
		if cfg.user != "" {
			opts = append(opts, redis.DialUsername(cfg.user))
		}
	}
	if cfg.db != 0 {
		opts = append(opts, redis.DialDatabase(cfg.db))
	}
	if !pipelined { // pooled connections: redigo bounds each write
		opts = append(opts, redis.DialWriteTimeout(cfg.connectTimeout))
	}
	if !cfg.useTLS {
		return opts, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.tlsConfig != nil {
		tc = cfg.tlsConfig.Clone()
	}
	if cfg.tlsServerName != "" {
		tc.ServerName = cfg.tlsServerName
	}
	if cfg.tlsSkipVerify {
		tc.InsecureSkipVerify = true
	}
	if cfg.tlsCAFile != "" {
		pem, err := os.ReadFile(cfg.tlsCAFile)
		if err != nil {
			return nil, fmt.Errorf("redlock: tls_ca: %w: %w", driver.ErrInvalid, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redlock: tls_ca %s: no PEM certificate: %w", cfg.tlsCAFile, driver.ErrInvalid)
		}
		tc.RootCAs = pool
	}
	return append(opts, redis.DialUseTLS(true), redis.DialTLSConfig(tc)), nil
}
