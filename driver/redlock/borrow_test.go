package redlock

import (
	"context"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// dialChecked dials server through the driver's pooled dial.
func dialChecked(t testing.TB, addr string) redis.Conn {
	t.Helper()
	cfg := defaultConfig()
	opts, err := cfg.dialOptions(false)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := cfg.pooledDial(addr, opts)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestBorrowCheck: a connection idle for idleCheckAfter is dropped when
// the server closed it, kept when alive; one used since is not checked.
func TestBorrowCheck(t *testing.T) {
	addr := testserver.StartRedis(t, 1)[0].Addr()
	live, closed := dialChecked(t, addr), dialChecked(t, addr)
	id, err := redis.Int64(closed.Do("CLIENT", "ID"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := redis.DoWithTimeout(live, 10*time.Millisecond, "CLIENT", "KILL", "ID", id); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the close reaches this end; live's read deadline passes
	idle := time.Now().Add(-idleCheckAfter)
	if err := testOnBorrow(live, idle); err != nil {
		t.Errorf("live connection: %v", err)
	}
	if err := testOnBorrow(closed, idle); err == nil {
		t.Error("closed connection kept")
	}
	if err := testOnBorrow(closed, time.Now()); err != nil {
		t.Errorf("closed connection used just now: checked (%v)", err)
	}
	if _, err := live.Do("PING"); err != nil {
		t.Errorf("live connection after its check: %v", err)
	}
}

// BenchmarkBorrowCheck: what the check costs a connection that was busy
// (a clock read) and one that idled (a read that does not wait).
func BenchmarkBorrowCheck(b *testing.B) {
	conn := dialChecked(b, testserver.StartRedis(b, 1)[0].Addr())
	for _, tc := range []struct {
		name string
		last time.Time
	}{{"busy", time.Now().Add(time.Hour)}, {"idle", time.Now().Add(-time.Hour)}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if err := testOnBorrow(conn, tc.last); err != nil {
					b.Fatalf("%T %v", err, err)
				}
			}
		})
	}
}
