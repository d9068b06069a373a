package mysql_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/mysql"
	"github.com/mutexkit/mutexkit/mutex"
)

// cutProxy forwards TCP connections to a server until cut: then it drops
// every byte either way and closes nothing, as a network partition (or a
// peer that stops answering while its kernel still acknowledges) does.
// The repository's own fault proxy is internal, so this driver has its own.
type cutProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(s, c) })
		p.wg.Go(func() { p.pipe(c, s) })
	}
}

// pipe copies from src to dst while the proxy is not cut; after the cut
// it reads and drops.
func (p *cutProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if n > 0 && !cut {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !cut && errors.Is(err, io.EOF) {
				dst.Close()
			}
			return
		}
	}
}

func (p *cutProxy) setCut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// A holder cut off by the network learns it lost its lease (its
// verifications get no reply), and the server frees the key once the cut
// session has been idle for wait_timeout (WithIdleTimeout), for another
// client to take.
func TestNetworkCut(t *testing.T) {
	dsn, _ := testDSN(t)
	ns := uniqueNamespace(t)
	p := newCutProxy(t, hostPort(t, dsn))
	const idle = 3 * time.Second
	cut := openClient(t, "mysql://root@"+p.addr()+"/test", ns,
		mysql.WithIdleTimeout(idle), mysql.WithStatementTimeout(time.Second))
	other := openClient(t, dsn, ns)
	l, err := cut.NewMutex("cut").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.setCut()
	select {
	case <-l.Done():
		t.Logf("loss reported %v after the cut: %v", time.Since(start).Round(time.Millisecond), l.Err())
	case <-time.After(10 * time.Second):
		t.Fatal("lease of a holder cut off not reported lost within 10s")
	}
	if !errors.Is(l.Err(), mutex.ErrLockLost) {
		t.Fatalf("Err: %v; want ErrLockLost", l.Err())
	}
	// Before wait_timeout, the server still thinks the cut session holds it.
	if time.Since(start) < idle/2 {
		if _, err := other.NewMutex("cut").TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
			t.Logf("TryLock right after the cut: %v (the server had already freed it)", err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), idle+10*time.Second)
	defer cancel()
	l2, err := other.NewMutex("cut").Lock(ctx)
	if err != nil {
		t.Fatalf("key of a cut-off holder not freed within wait_timeout (%v) and 10s: %v", idle, err)
	}
	t.Logf("another client took the key %v after the cut", time.Since(start).Round(time.Millisecond))
	l2.Unlock(t.Context())
}

// A waiter cut off by the network when the server grants it the key holds
// the others up for its waiter session's short wait_timeout (about
// driver.QueueHold and 3s), not the holder's 60s: the server keeps the
// key on the cut connection, idle, until wait_timeout ends it.
func TestCutWaiterStallsBriefly(t *testing.T) {
	dsn, admin := testDSN(t)
	ns := uniqueNamespace(t)
	p := newCutProxy(t, hostPort(t, dsn))
	a := openClient(t, dsn, ns)
	cut := openClient(t, "mysql://root@"+p.addr()+"/test", ns, mysql.WithStatementTimeout(time.Second))
	c := openClient(t, dsn, ns)
	held, err := a.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(before map[int64]bool) map[int64]bool {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			now := serverWaiters(t, admin)
			for id := range now {
				if !before[id] {
					return now
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("a waiter never waited in the server")
			}
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	before := serverWaiters(t, admin)
	go func() { _, err := cut.NewMutex("k").Lock(ctx); errs <- err }()
	before = waitFor(before)
	got := make(chan time.Time, 1)
	go func() {
		l, err := c.NewMutex("k").Lock(ctx)
		got <- time.Now()
		if err == nil {
			l.Unlock(t.Context())
		}
		errs <- err
	}()
	waitFor(before)
	p.setCut()
	start := time.Now()
	held.Unlock(t.Context()) // the server grants the cut waiter's connection
	select {
	case at := <-got:
		t.Logf("the waiter behind the cut one had the key %v after the release", at.Sub(start).Round(time.Millisecond))
	case <-ctx.Done():
		t.Fatal("the waiter behind a cut-off waiter did not get the key within 15s")
	}
	if err := <-errs; err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("a waiter: %v", err)
	}
	cancel()
	<-errs
}
