package redlock_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
)

// writeCounter counts the writes on a socket: one per flush of a batch
// (small batches fit redigo's 4 KiB buffer).
type writeCounter struct {
	net.Conn
	writes *atomic.Int64
}

func (c writeCounter) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// The pipe itself is tested in internal/pipeline; these tests are of the
// driver over its transports.

// pipeLocker connects a Locker whose every call, a lone one too, goes
// through the pipe, and whose writes are counted.
func (c *cluster) pipeLocker(t *testing.T, writes *atomic.Int64, opts ...string) driver.Locker {
	t.Helper()
	if writes == nil {
		writes = new(atomic.Int64)
	}
	conn, err := redlock.NewConnector(c.dsn(opts...), redlock.WithPipeAlways(), redlock.WithConnWrapper(func(nc net.Conn) net.Conn {
		return writeCounter{nc, writes}
	}))
	l := connect(t, conn, err)
	return l
}

// TestPipelineNodeKilled: calls in flight on the pipe when their node is
// killed fail at once with driver.ErrUnavailable, and the next call after
// a restart dials again and succeeds.
func TestPipelineNodeKilled(t *testing.T) {
	c := newCluster(t, startRedisArgs(t, 1, "--enable-debug-command", "local"))
	l := c.pipeLocker(t, nil, "pipeline=1", "timeout=20s")
	if _, err := acquire(t, l, "warm", driver.NewOwner()); err != nil {
		t.Fatal(err)
	}
	go c.do(0, "DEBUG", "SLEEP", "30") // calls stay in flight until the kill
	time.Sleep(50 * time.Millisecond)
	const calls = 16
	errs := make(chan error, calls)
	for i := range calls {
		go func() {
			_, err := acquire(t, l, fmt.Sprint("killed/", i), driver.NewOwner())
			errs <- err
		}()
	}
	time.Sleep(100 * time.Millisecond)
	killed := time.Now()
	c.servers[0].Kill()
	for range calls {
		select {
		case err := <-errs:
			if !errors.Is(err, driver.ErrUnavailable) {
				t.Errorf("call in flight on a killed node: %v; want driver.ErrUnavailable", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("calls in flight on a killed node still waiting 5s after the kill")
		}
	}
	t.Logf("all %d calls failed within %v of the kill", calls, time.Since(killed))
	c.servers[0].Restart()
	if _, err := acquire(t, l, "after", driver.NewOwner()); err != nil {
		t.Fatalf("first call after a restart: %v", err)
	}
}

// TestPipelineCloseInFlight: Close with calls in flight fails them and
// leaves no goroutine.
func TestPipelineCloseInFlight(t *testing.T) {
	c := startCluster(t, 1)
	before := runtime.NumGoroutine()
	conn := c.connector("pipeline=2")
	l, err := conn.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var done atomic.Int64
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key, owner := fmt.Sprintf("close/%d/%d", g, i), driver.NewOwner()
				if _, err := acquire(t, l, key, owner); err != nil {
					if !errors.Is(err, driver.ErrClosed) && !errors.Is(err, driver.ErrUnavailable) {
						t.Errorf("Acquire during Close: %v", err)
					}
					return
				}
				l.Release(t.Context(), key, owner)
				done.Add(1)
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Logf("Close: %v", err) // releases racing with the callers' own
	}
	close(stop)
	wg.Wait()
	t.Logf("%d acquire+release before Close", done.Load())
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLoneCallPooled: by default a call alone on its node takes a pooled
// connection and never touches the pipe; calls that overlap share it.
func TestLoneCallPooled(t *testing.T) {
	c := startCluster(t, 1)
	var writes atomic.Int64
	conn, err := redlock.NewConnector(c.dsn(), redlock.WithConnWrapper(func(nc net.Conn) net.Conn {
		return writeCounter{nc, &writes}
	}))
	l := connect(t, conn, err)
	for i := range 10 {
		owner := driver.NewOwner()
		if _, err := acquire(t, l, fmt.Sprint("solo/", i), owner); err != nil {
			t.Fatal(err)
		}
		if err := l.Release(t.Context(), fmt.Sprint("solo/", i), owner); err != nil {
			t.Fatal(err)
		}
	}
	if got := writes.Load(); got != 0 {
		t.Errorf("%d writes on the pipe for calls one at a time; want 0", got)
	}
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 10 {
				key, owner := fmt.Sprintf("many/%d/%d", g, i), driver.NewOwner()
				if _, err := acquire(t, l, key, owner); err != nil {
					t.Error(err)
					return
				}
				l.Release(t.Context(), key, owner)
			}
		})
	}
	wg.Wait()
	if writes.Load() == 0 {
		t.Error("32 goroutines at once never used the pipe")
	}
}

// preSetGet makes a Redis 7 server answer SET with NX and GET as servers
// before 7.0 do, with a syntax error: it renames the GET option on the way
// out (to XET, which no server knows). It counts writes too.
type preSetGet struct{ writeCounter }

func (c preSetGet) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("$3\r\nSET\r\n")) {
		b = bytes.ReplaceAll(b, []byte("$3\r\nGET\r\n"), []byte("$3\r\nXET\r\n"))
	}
	return c.writeCounter.Write(b)
}

// TestAcquireWithoutSetGet: a server that refuses SET with NX and GET
// (before Redis 7.0) is asked by the acquire script instead, from then on,
// and the lock behaves the same: exclusive, and an owner's retry
// recognised.
func TestAcquireWithoutSetGet(t *testing.T) {
	c := startCluster(t, 1)
	var writes atomic.Int64
	conn, err := redlock.NewConnector(c.dsn(), redlock.WithoutListQueue(), redlock.WithPipeAlways(), redlock.WithConnWrapper(func(nc net.Conn) net.Conn {
		return preSetGet{writeCounter{nc, &writes}}
	}))
	l := connect(t, conn, err)

	me := driver.NewOwner()
	if _, err := acquire(t, l, "old", me); err != nil {
		t.Fatalf("acquire from a server without SET NX GET: %v", err)
	}
	if got := c.owner(0, "old"); got != me.String() {
		t.Fatalf("the lock holds %q; want %s", got, me)
	}
	if _, err := acquire(t, l, "old", driver.NewOwner()); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("another owner: %v; want ErrLocked", err)
	}
	if _, err := acquire(t, l, "old", me); err != nil {
		t.Fatalf("the owner's retry: %v; want its grant recognised", err)
	}
	writes.Store(0)
	if _, err := acquire(t, l, "old-2", me); err != nil {
		t.Fatal(err)
	}
	if got := writes.Load(); got != 1 {
		t.Errorf("%d writes for an acquire once the refusal is known; want 1 (the script alone)", got)
	}
	if err := l.Release(t.Context(), "old", me); err != nil {
		t.Fatal(err)
	}
}
