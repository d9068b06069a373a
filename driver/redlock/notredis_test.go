package redlock_test

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

// httpServer listens on a free port and answers whatever it reads with an
// HTTP error, as a web server on a mistyped port does.
func httpServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Read(make([]byte, 512)); err == nil {
					conn.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
				}
			})
		}
	})
	return ln.Addr().String()
}

// TestNotRedis: a server that does not speak Redis (an HTTP port, with or
// without TLS) gives an error that says so, matching
// driver.ErrDenied (the DSN is wrong: waiting cannot help), without
// redigo's "possible server error or unsupported concurrent read" and
// without the password.
func TestNotRedis(t *testing.T) {
	for _, tc := range []struct{ name, dsn string }{
		{"http", "redis://:" + secret + "@" + httpServer(t)},
		{"http unpipelined", "redis://:" + secret + "@" + httpServer(t) + "?pipeline=0"},
		{"tls", "rediss://:" + secret + "@" + httpServer(t) + "?tls_skip_verify=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := redlock.NewConnector(tc.dsn)
			l := connect(t, conn, err)
			_, err = l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Minute})
			notRedis(t, "Acquire", err)
			notRedis(t, "Ping", l.Ping(t.Context()))
			cl := mutex.NewClient(conn)
			defer cl.Close()
			_, err = cl.NewMutex("k").TryLock(t.Context())
			if !errors.Is(err, mutex.ErrDenied) {
				t.Errorf("TryLock: %v; want mutex.ErrDenied", err)
			}
		})
	}
}

func notRedis(t *testing.T, call string, err error) {
	t.Helper()
	switch {
	case !errors.Is(err, driver.ErrDenied) || errors.Is(err, driver.ErrUnavailable):
		t.Errorf("%s: %v; want driver.ErrDenied alone", call, err)
	case !strings.Contains(err.Error(), "did not answer as Redis does"):
		t.Errorf("%s: %v; want it to say the server does not speak Redis", call, err)
	case strings.Contains(err.Error(), "concurrent read"), strings.Contains(err.Error(), secret):
		t.Errorf("%s: %v; want neither redigo's guess nor the password", call, err)
	}
}
