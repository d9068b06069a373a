package chaos

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// ProxyMode is what a Proxy does to the traffic it forwards.
type ProxyMode int

const (
	// Pass forwards bytes as they come.
	Pass ProxyMode = iota
	// Delay holds every chunk for the proxy's latency before forwarding it.
	Delay
	// Drop resets each connection, with the proxy's drop probability, as
	// each chunk passes (a lossy link whose connections break).
	Drop
	// Blackhole forwards nothing and answers nothing: a partition. The
	// kernel still acknowledges TCP segments, so peers see a silent
	// application rather than a dead host; connections alive when the
	// partition began are closed when it heals, as they would have timed out.
	Blackhole
)

// Proxy is a loopback TCP proxy in front of one server, whose behaviour a
// test changes while clients use it.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	mode    ProxyMode
	latency time.Duration
	dropP   float64
	conns   map[*proxyConn]struct{}
	healed  chan struct{} // closed when a Blackhole ends
	closed  bool
	wg      sync.WaitGroup
}

type proxyConn struct {
	client, server net.Conn
	once           sync.Once
	stale          bool // alive during a blackhole: closed when it heals
}

func (c *proxyConn) close(reset bool) {
	c.once.Do(func() {
		if reset {
			if tc, ok := c.client.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
		}
		c.client.Close()
		c.server.Close()
	})
}

// NewProxy listens on a free loopback port and forwards to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*proxyConn]struct{}{}, healed: make(chan struct{})}
	close(p.healed)
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetMode changes the proxy's behaviour. Ending a Blackhole closes the
// connections that lived through it.
func (p *Proxy) SetMode(m ProxyMode, latency time.Duration, dropP float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.mode
	p.mode, p.latency, p.dropP = m, latency, dropP
	switch {
	case m == Blackhole && old != Blackhole:
		p.healed = make(chan struct{})
		for c := range p.conns {
			c.stale = true
		}
	case m != Blackhole && old == Blackhole:
		close(p.healed)
		for c := range p.conns {
			if c.stale {
				go c.close(false)
				delete(p.conns, c)
			}
		}
	}
}

// CutServerSide closes the server side of every connection, as the server
// does when its keepalive gives up on a partitioned client; client sides
// stay open (and silent) until the partition heals.
func (p *Proxy) CutServerSide() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.server.Close()
	}
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.close(false)
	}
	if p.mode == Blackhole {
		close(p.healed)
		p.mode = Pass
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode, closed := p.mode, p.closed
		p.mu.Unlock()
		if closed {
			cc.Close()
			return
		}
		sc, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			cc.(*net.TCPConn).SetLinger(0)
			cc.Close() // the server is down: refuse, as it would
			continue
		}
		c := &proxyConn{client: cc, server: sc, stale: mode == Blackhole}
		p.mu.Lock()
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(c, cc, sc) })
		p.wg.Go(func() { p.pipe(c, sc, cc) })
	}
}

// pipe copies src to dst chunk by chunk, applying the mode to each.
func (p *Proxy) pipe(c *proxyConn, src, dst net.Conn) {
	defer func() {
		c.close(false)
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			mode, lat, dropP, stale := p.mode, p.latency, p.dropP, c.stale
			p.mu.Unlock()
			switch {
			case mode == Blackhole || stale:
				continue // swallowed; the connection closes when the partition heals
			case mode == Drop && rand.Float64() < dropP:
				c.close(true)
				return
			case mode == Delay && lat > 0:
				time.Sleep(lat)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.close(true)
			}
			return
		}
	}
}
