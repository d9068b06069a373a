package testserver

import (
	"net"
	"sync"
	"time"
)

// replHold is a loopback TCP relay a replica replicates through, so that a
// test can hold the link: while held no byte passes either way, and both
// connections stay open. The replica then still answers sentinels as a
// healthy replica with its link up, and a master that dies meanwhile takes
// the writes it acknowledged since with it.
//
// It is not chaos.Proxy because chaos's tests import this package; and a
// Blackhole there drops bytes, where this keeps them.
type replHold struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	released chan struct{} // closed while bytes may pass
	conns    []net.Conn
	closed   bool
	wg       sync.WaitGroup
}

func newReplHold(target string) (*replHold, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &replHold{ln: ln, target: target, released: make(chan struct{})}
	close(h.released)
	h.wg.Go(h.accept)
	return h, nil
}

func (h *replHold) port() int { return h.ln.Addr().(*net.TCPAddr).Port }

// hold stops every byte where it is.
func (h *replHold) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = make(chan struct{})
}

// close ends the relay and its connections; held bytes are dropped.
func (h *replHold) close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		select {
		case <-h.released:
		default:
			close(h.released)
		}
		for _, c := range h.conns {
			c.Close()
		}
	}
	h.mu.Unlock()
	h.ln.Close()
	h.wg.Wait()
}

func (h *replHold) accept() {
	for {
		in, err := h.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", h.target, time.Second)
		if err != nil {
			in.Close()
			continue
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		h.conns = append(h.conns, in, out)
		h.mu.Unlock()
		h.wg.Go(func() { h.pipe(in, out) })
		h.wg.Go(func() { h.pipe(out, in) })
	}
}

// pipe copies src to dst, each chunk (and the end of src) waiting while
// the relay is held.
func (h *replHold) pipe(src, dst net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if !h.wait() {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// wait blocks while the relay is held, and reports whether it is still open.
func (h *replHold) wait() bool {
	h.mu.Lock()
	released := h.released
	h.mu.Unlock()
	<-released
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.closed
}
