package redlock_test

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

const secret = "s3cr3t-P4ss"

func TestDSNValid(t *testing.T) {
	for _, dsn := range []string{
		"redis://127.0.0.1:6379",
		"redis://localhost",
		"redis://[::1]:6379",
		"redis://[::1]",
		"redis://:" + secret + "@127.0.0.1:6379/2",
		"redis://user:" + secret + "@a:1,b:2,c:3",
		"redis://a:1,b:2,c:3,d:4,e:5?timeout=50ms&drift_factor=0.02&drift_fixed=5ms&pool_max_idle=8&pool_max_active=16&pool_idle_timeout=1m&prefix=app&connect_timeout=2s",
		"rediss://h:6380?tls_server_name=redis.internal&tls_skip_verify=true",
		"redis://h:1?pipeline=0",
		"redis://h:1?pipeline=2",
		"redis://:p%40ss@h:1",
		"redis://:p@ss@h:1", // unescaped: the last '@' of the host list ends the password
		"redis://:p%2Fss@h:1?prefix=team@h:2",
	} {
		if _, err := (redlock.Driver{}).OpenConnector(dsn); err != nil {
			t.Errorf("OpenConnector(%q): %v", dsn, err)
		}
	}
}

func TestDSNInvalid(t *testing.T) {
	for _, dsn := range []string{
		"",
		"127.0.0.1:6379",
		"http://:" + secret + "@h:1",
		"redis://:" + secret + "@",
		"redis://:" + secret + "@h:1,h:2",
		"redis://:" + secret + "@h:1,,h:3",
		"redis://:" + secret + "@h:99999",
		"redis://:" + secret + "@h:port",
		"redis://:" + secret + "%zz@h:1",
		"redis://:" + secret + "@h:1/db",
		"redis://:" + secret + "@h:1?timeout=-1s",
		"redis://:" + secret + "@h:1?bogus=1",
		"redis://:" + secret + "@h:1?tls_ca=/x",
		"redis://:" + secret + "@h:1?drift_factor=0.7",
		"redis://:" + secret + "@h:1?prefix={x}",
		"redis://:" + secret + "@h:1?pipeline=-1",
		"redis://:" + secret + "@h:1?pipeline=1000",
		"redis://:" + secret + "@h:1?a=%zz",
		"redis://:" + secret + "@[::1:1",
		"redis://:" + secret + "/x@h:1", // '/' ends the host list: escape it as %2F
		"redis://:" + secret + "?x@h:1",
		"redis://:" + secret + "#x@h:1",
		"redis://:" + secret + "@h:1#x",
		"redis://:" + secret + "@::1",
	} {
		_, err := (redlock.Driver{}).OpenConnector(dsn)
		if err == nil {
			t.Errorf("OpenConnector(%q) succeeded; want an error", dsn)
			continue
		}
		if !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("OpenConnector(%q): %v; want driver.ErrInvalid", dsn, err)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("OpenConnector error quotes the password: %v", err)
		}
		_, err = mutex.Open(dsn)
		if !errors.Is(err, mutex.ErrInvalid) || strings.Contains(err.Error(), secret) {
			t.Errorf("mutex.Open: %v; want ErrInvalid without the password", err)
		}
	}
}

func TestTwoNodesRefused(t *testing.T) {
	_, err := redlock.NewConnector("redis://a:1,b:2")
	if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), "3 or more") {
		t.Fatalf("two nodes: %v; want ErrInvalid explaining 1 or 3+", err)
	}
}

// TestConstructorErrors: a bad Option fails NewConnector; FromPools keeps
// its errors (pool count, a nil pool, a bad Option) for Connect. Each
// matches driver.ErrInvalid, and the first one is reported.
func TestConstructorErrors(t *testing.T) {
	if _, err := redlock.NewConnector("redis://a:1", redlock.WithPrefix("a{b}"), redlock.WithNodeTimeout(-1)); !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), "hash tag") {
		t.Errorf("NewConnector with bad Options: %v; want ErrInvalid naming the first", err)
	}
	pool := &redis.Pool{Dial: func() (redis.Conn, error) { return nil, errors.New("never dialled") }}
	for _, tc := range []struct {
		name  string
		pools []*redis.Pool
		opts  []redlock.Option
		says  string
	}{
		{"none", nil, nil, "0 pools"},
		{"two", []*redis.Pool{pool, pool}, nil, "2 pools"},
		{"nil pool", []*redis.Pool{pool, nil, pool}, nil, "pool 1 is nil"},
		{"bad option", []*redis.Pool{pool}, []redlock.Option{redlock.WithPipeline(-1), redlock.WithPrefix("")}, "pipeline connections"},
	} {
		conn := redlock.FromPools(tc.pools, tc.opts...)
		if conn.DriverName() != "redis" {
			t.Errorf("DriverName %q; want redis", conn.DriverName())
		}
		l, err := conn.Connect(t.Context())
		if l != nil || !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("FromPools (%s): Connect: %v, %v; want ErrInvalid saying %q", tc.name, l, err, tc.says)
		}
	}
	l, err := redlock.FromPools([]*redis.Pool{pool}).Connect(t.Context())
	if err != nil {
		t.Fatalf("FromPools with one pool: Connect: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("a second Close: %v; want nil", err)
	}
}

// TestDSNPasswordStaysWithItsHost: with an '@' in an option value, the
// client dials the host before it, with the password, and nothing reaches
// the address after the '@'.
func TestDSNPasswordStaysWithItsHost(t *testing.T) {
	servers := startRedisArgs(t, 1, "--requirepass", secret)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []byte
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(io.LimitReader(conn, 1<<16))
			conn.Close()
			mu.Lock()
			got = append(got, b...)
			mu.Unlock()
		}
	})
	dsn := "redis://:" + secret + "@" + servers[0].Addr() + "?prefix=team@" + ln.Addr().String()
	cl, err := mutex.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if l, err := cl.NewMutex("k").TryLock(t.Context()); err != nil {
		t.Errorf("TryLock: %v", err)
	} else {
		lock := redlock.LockKey("team@"+ln.Addr().String(), "k")
		if n, err := redis.Int(newCluster(t, servers).doAuth(0, secret, "EXISTS", lock)); err != nil || n != 1 {
			t.Errorf("EXISTS %s (the prefix holds the '@'): %d, %v", lock, n, err)
		}
		if err := l.Unlock(t.Context()); err != nil {
			t.Error(err)
		}
	}
	cl.Close()
	ln.Close()
	wg.Wait()
	if len(got) > 0 {
		t.Errorf("the address after the '@' received %q", got)
	}
}
