package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver/redlock/internal/pipeline"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
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

// dialer dials addr as the driver does: over the socket the pipe wraps,
// whose writes it counts, with redigo's own timeouts (which the pipe
// overrides once it owns the socket).
func dialer(addr string, writes *atomic.Int64) pipeline.DialFunc {
	return func(ctx context.Context, wrap func(net.Conn) net.Conn) (redis.Conn, error) {
		netDial := redis.DialContextFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return wrap(writeCounter{c, writes}), nil
		})
		return redis.DialContext(ctx, "tcp", addr, netDial, redis.DialReadTimeout(time.Millisecond))
	}
}

// newPipe returns a Pipe of conns connections to server, closed when the
// test ends, and its write counter.
func newPipe(t *testing.T, server *testserver.Redis, conns int) (*pipeline.Pipe, *atomic.Int64) {
	t.Helper()
	writes := new(atomic.Int64)
	p := pipeline.New(conns, dialer(server.Addr(), writes))
	t.Cleanup(p.Close)
	return p, writes
}

// do runs one command on p within d.
func do(t *testing.T, p *pipeline.Pipe, d time.Duration, cmd string, args ...any) (any, error) {
	t.Helper()
	return p.Do(t.Context(), time.Now().Add(d), cmd, args)
}

// TestDoAndDoAll: replies come back to their commands, a reply error to
// its command alone; the connection's redigo read timeout (1ms) is the
// pipe's to ignore.
func TestDoAndDoAll(t *testing.T) {
	p, _ := newPipe(t, testserver.StartRedis(t, 1)[0], 1)
	key := "pipeline/" + t.Name()
	if _, err := do(t, p, 5*time.Second, "SET", key, "v"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // an idle connection outlives its read timeout
	if v, err := redis.String(do(t, p, 5*time.Second, "GET", key)); err != nil || v != "v" {
		t.Fatalf("GET: %q, %v", v, err)
	}
	cmds := []pipeline.Cmd{{Name: "GET", Args: []any{key}}, {Name: "INCR", Args: []any{key}}, {Name: "PING"}}
	out := make([]pipeline.Result, len(cmds))
	p.DoAll(t.Context(), time.Now().Add(5*time.Second), cmds, out)
	if v, _ := redis.String(out[0].Reply, out[0].Err); v != "v" {
		t.Errorf("GET in a batch: %v, %v", out[0].Reply, out[0].Err)
	}
	var reply redis.Error
	if !errors.As(out[1].Err, &reply) {
		t.Errorf("INCR of a string: %v, %v; want the server's error", out[1].Reply, out[1].Err)
	}
	if v, _ := redis.String(out[2].Reply, out[2].Err); v != "PONG" {
		t.Errorf("PING after a reply error: %v, %v", out[2].Reply, out[2].Err)
	}
}

// TestSharesFlushes: the commands of 64 goroutines go in far fewer writes
// than there are commands.
func TestSharesFlushes(t *testing.T) {
	p, writes := newPipe(t, testserver.StartRedis(t, 1)[0], 1)
	if _, err := do(t, p, 5*time.Second, "PING"); err != nil { // dial
		t.Fatal(err)
	}
	writes.Store(0)
	const goroutines, rounds = 64, 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for r := range rounds {
				key := fmt.Sprintf("share/%d/%d", g, r)
				if _, err := do(t, p, 5*time.Second, "SET", key, r); err != nil { // a slow CI machine must not fail it
					t.Error(err)
					return
				}
				if _, err := do(t, p, 5*time.Second, "DEL", key); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	cmds, w := int64(goroutines*rounds*2), writes.Load()
	t.Logf("%d commands in %d writes (%.1f a write)", cmds, w, float64(cmds)/float64(w))
	if w == 0 || w > cmds/2 {
		t.Errorf("%d writes for %d commands from %d goroutines: want them shared (at most half as many writes)", w, cmds, goroutines)
	}
}

// TestUncontendedOneWrite: a lone command costs one write, and a batch
// one too.
func TestUncontendedOneWrite(t *testing.T) {
	p, writes := newPipe(t, testserver.StartRedis(t, 1)[0], 1)
	if _, err := do(t, p, 5*time.Second, "PING"); err != nil { // dial
		t.Fatal(err)
	}
	writes.Store(0)
	if _, err := do(t, p, 5*time.Second, "PING"); err != nil {
		t.Fatal(err)
	}
	if got := writes.Load(); got != 1 {
		t.Errorf("%d writes for one command; want 1", got)
	}
	writes.Store(0)
	out := make([]pipeline.Result, 10)
	cmds := make([]pipeline.Cmd, len(out))
	for i := range cmds {
		cmds[i] = pipeline.Cmd{Name: "PING"}
	}
	p.DoAll(t.Context(), time.Now().Add(5*time.Second), cmds, out)
	if got := writes.Load(); got != 1 {
		t.Errorf("%d writes for a batch of 10; want 1", got)
	}
}

// TestAbandonedCall: a call whose ctx ends while the server has not
// answered leaves the stream in step: the call queued behind it gets its
// own reply, and so do the calls after.
func TestAbandonedCall(t *testing.T) {
	server := testserver.StartRedis(t, 1, testserver.WithRedisArgs("--enable-debug-command", "local"))[0]
	p, _ := newPipe(t, server, 1)
	if _, err := do(t, p, 5*time.Second, "SET", "warm", "warm"); err != nil {
		t.Fatal(err)
	}
	go func() { // the server answers no one for 600ms
		c, err := redis.Dial("tcp", server.Addr())
		if err == nil {
			c.Do("DEBUG", "SLEEP", "0.6")
			c.Close()
		}
	}()
	time.Sleep(50 * time.Millisecond)

	errA := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
		defer cancel()
		_, err := p.Do(ctx, time.Now().Add(5*time.Second), "SET", []any{"abandoned", "abandoned"})
		errA <- err
	}()
	time.Sleep(50 * time.Millisecond) // A is written; B goes behind it
	errB := make(chan error, 1)
	go func() {
		_, err := do(t, p, 5*time.Second, "SET", "behind", "behind")
		errB <- err
	}()
	select {
	case err := <-errA:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("abandoned call: %v; want its ctx's DeadlineExceeded", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the call whose ctx ended did not return")
	}
	if err := <-errB; err != nil {
		t.Fatalf("call queued behind an abandoned one: %v", err)
	}
	for _, key := range []string{"warm", "behind", "abandoned", "warm", "behind"} {
		if v, err := redis.String(do(t, p, 5*time.Second, "GET", key)); err != nil || v != key {
			t.Fatalf("GET %s after an abandoned call: %q, %v", key, v, err)
		}
	}
}

// TestRandomCancels: goroutines whose calls end at random points (before
// writing, in flight) never get another call's reply.
func TestRandomCancels(t *testing.T) {
	p, _ := newPipe(t, testserver.StartRedis(t, 1)[0], 1)
	var wg sync.WaitGroup
	var cancelled atomic.Int64
	for g := range 32 {
		wg.Go(func() {
			key := fmt.Sprintf("rand/%d", g)
			for i := range 40 {
				val := fmt.Sprint(key, "/", i)
				ctx, cancel := context.WithTimeout(t.Context(), rand.N(400*time.Microsecond))
				_, err := p.Do(ctx, time.Now().Add(5*time.Second), "SET", []any{key, val})
				cancel()
				switch {
				case err == nil:
				case errors.Is(err, context.DeadlineExceeded):
					cancelled.Add(1)
					continue
				default:
					t.Errorf("SET %s: %v", key, err)
					return
				}
				if v, err := redis.String(do(t, p, 5*time.Second, "GET", key)); err != nil || v != val {
					t.Errorf("GET %s: %q, %v; want %q: the stream is out of step", key, v, err, val)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d of %d calls cut short by their ctx", cancelled.Load(), 32*40)
}

// TestStall: a server that answers nothing fails the calls on its
// connection at their deadline, with a timeout of the server
// (os.ErrDeadlineExceeded), not of ctx; the connection is closed and the
// next call dials a new one.
func TestStall(t *testing.T) {
	server := testserver.StartRedis(t, 1)[0]
	p, _ := newPipe(t, server, 1)
	if _, err := do(t, p, 5*time.Second, "PING"); err != nil {
		t.Fatal(err)
	}
	server.Pause()
	start := time.Now()
	_, err := do(t, p, 200*time.Millisecond, "PING")
	server.Resume()
	if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PING to a paused server: %v; want os.ErrDeadlineExceeded", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("PING to a paused server returned after %v; want about its 200ms deadline", took)
	}
	if _, err := do(t, p, 5*time.Second, "PING"); err != nil {
		t.Fatalf("PING once the server is back: %v", err)
	}
}

// TestServerKilled: calls in flight when their server is killed fail at
// once, and the next call after a restart dials again and succeeds.
func TestServerKilled(t *testing.T) {
	server := testserver.StartRedis(t, 1, testserver.WithRedisArgs("--enable-debug-command", "local"))[0]
	p, _ := newPipe(t, server, 1)
	if _, err := do(t, p, 5*time.Second, "PING"); err != nil {
		t.Fatal(err)
	}
	go func() { // calls stay in flight until the kill
		c, err := redis.Dial("tcp", server.Addr())
		if err == nil {
			c.Do("DEBUG", "SLEEP", "30")
			c.Close()
		}
	}()
	time.Sleep(50 * time.Millisecond)
	const calls = 16
	errs := make(chan error, calls)
	for i := range calls {
		go func() {
			_, err := do(t, p, 20*time.Second, "SET", fmt.Sprint("killed/", i), i)
			errs <- err
		}()
	}
	time.Sleep(100 * time.Millisecond)
	killed := time.Now()
	server.Kill()
	for range calls {
		select {
		case err := <-errs:
			if err == nil {
				t.Error("call in flight on a killed server succeeded")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("calls in flight on a killed server still waiting 5s after the kill")
		}
	}
	t.Logf("all %d calls failed within %v of the kill", calls, time.Since(killed))
	server.Restart()
	if _, err := do(t, p, 5*time.Second, "PING"); err != nil {
		t.Fatalf("first call after a restart: %v", err)
	}
}

// TestDialFailure: a dial that fails fails the call with its error; a
// dial that does not end by the call's deadline fails it then.
func TestDialFailure(t *testing.T) {
	refused := errors.New("refused")
	p := pipeline.New(1, func(context.Context, func(net.Conn) net.Conn) (redis.Conn, error) { return nil, refused })
	defer p.Close()
	if _, err := do(t, p, time.Second, "PING"); !errors.Is(err, refused) {
		t.Errorf("call over a failing dial: %v; want its error", err)
	}
	slow := pipeline.New(1, func(ctx context.Context, _ func(net.Conn) net.Conn) (redis.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	defer slow.Close()
	start := time.Now()
	if _, err := do(t, slow, 100*time.Millisecond, "PING"); err == nil {
		t.Error("call over a dial that never ends succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("call over a dial that never ends returned after %v; want about its 100ms deadline", took)
	}
}

// TestCloseInFlight: Close with calls in flight fails them with ErrClosed
// (or the connection's error), fails the calls after it, and leaves no
// goroutine.
func TestCloseInFlight(t *testing.T) {
	server := testserver.StartRedis(t, 1)[0]
	before := runtime.NumGoroutine()
	p := pipeline.New(2, dialer(server.Addr(), new(atomic.Int64)))
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
				if _, err := do(t, p, 5*time.Second, "SET", fmt.Sprintf("close/%d/%d", g, i), i); err != nil {
					return
				}
				done.Add(1)
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	p.Close()
	close(stop)
	wg.Wait()
	t.Logf("%d calls before Close", done.Load())
	if _, err := do(t, p, time.Second, "PING"); !errors.Is(err, pipeline.ErrClosed) {
		t.Errorf("call after Close: %v; want ErrClosed", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
