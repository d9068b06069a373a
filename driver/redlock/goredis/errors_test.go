package goredis_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// TestDenied: a wrong password, none, a command the user's ACL forbids
// are driver.ErrDenied, never driver.ErrUnavailable, and the error
// carries no password.
func TestDenied(t *testing.T) {
	const pass, limitedPass = "adm1n-Pw", "l1mited-Pw"
	srv := testserver.StartRedis(t, 1, testserver.WithRedisArgs("--requirepass", pass))[0]
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: pass})
	defer admin.Close()
	if err := admin.Do(t.Context(), "ACL", "SETUSER", "limited", "on", ">"+limitedPass, "~*", "&*", "+@all", "-set").Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, user, pass, says string }{
		{"wrong password", "", "wrong-" + pass, "WRONGPASS"},
		{"no password", "", "", "NOAUTH"},
		{"acl", "limited", limitedPass, "can't run this command"}, // TryLock's script (list.go) runs SET
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: tc.user, Password: tc.pass, MaxRetries: -1})
			defer c.Close()
			l := connectT(t, goredis.FromClient(c))
			_, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: ttl})
			switch {
			case !errors.Is(err, driver.ErrDenied) || errors.Is(err, driver.ErrUnavailable):
				t.Fatalf("Acquire: %v; want driver.ErrDenied alone", err)
			case !strings.Contains(err.Error(), tc.says):
				t.Fatalf("Acquire: %v; want it to say %s", err, tc.says)
			case strings.Contains(err.Error(), pass) || strings.Contains(err.Error(), limitedPass):
				t.Fatalf("the error carries a password: %v", err)
			}
		})
	}
}

// TestUnavailable: a server nobody listens on is driver.ErrUnavailable,
// within the node timeout.
func TestUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	l := connectT(t, goredis.FromClient(c))
	_, err = l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: ttl})
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("Acquire: %v; want driver.ErrUnavailable", err)
	}
	if err := l.Ping(t.Context()); !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("Ping: %v; want driver.ErrUnavailable", err)
	}
}

// TestInvalid: a nil client, two clients, none, or a Ring (ErrRing too)
// fail Connect with driver.ErrInvalid.
func TestInvalid(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()
	for name, cs := range map[string][]redis.UniversalClient{"nil": {nil}, "two": {c, c}, "none": nil, "ring": {ring},
		"typed nil": {(*redis.Client)(nil)}, "typed nil cluster": {(*redis.ClusterClient)(nil)}} {
		_, err := goredis.FromClients(cs).Connect(t.Context())
		if !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("%s: Connect: %v; want driver.ErrInvalid", name, err)
		}
		if name == "ring" && !errors.Is(err, goredis.ErrRing) {
			t.Errorf("ring: Connect: %v; want goredis.ErrRing", err)
		}
	}
}

// TestCloseLeavesClient: closing a Locker that waited (so subscribed)
// leaves the application's client open and no goroutine of the driver
// behind.
func TestCloseLeavesClient(t *testing.T) {
	ns := startNodes(t, 1)
	c := ns.clients()[0]
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	l, err := goredis.FromClient(c).Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	holder, waiter := driver.NewOwner(), driver.NewOwner()
	if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "c", Owner: holder, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	l.Acquire(t.Context(), driver.AcquireRequest{Key: "c", Owner: waiter, TTL: ttl, Wait: true})
	stop, err := l.Watch("c", waiter, make(chan struct{}, 1))
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("the application's client after Close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
