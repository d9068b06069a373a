// Package pipeline is an auto-pipelining Redis client over redigo, for one
// server: a few long-lived connections, each shared by every caller.
// redigo pipelines only what one caller sends on its own connection; here
// the commands of concurrent callers share round trips.
//
// A caller queues its command with a reply slot (a pending) and waits on
// it; commands queued together are written together and flushed once, and
// one reader goroutine per connection reads the replies in order and
// completes the pendings.
//
// Writing: the caller that finds the connection idle writes the queue
// itself (its own command and whatever else is queued) and flushes, so an
// uncontended call costs one write and one read, as on a pooled
// connection. Whatever is queued while it writes is handed to the
// connection's writer goroutine, which writes and flushes batches until
// the queue is empty.
//
// Timeouts: each caller waits until its own deadline or the end of its
// ctx, then leaves its pending behind: the writer skips it if not yet
// written, the reader reads and drops its reply if it was, so the stream
// never loses its place. The connection's own deadline is the latest of
// its callers' plus a slack: a connection that has answered nothing by
// then is stalled (a paused or unreachable server) and is closed, failing
// every call still on it. An idle connection has no deadline.
//
// Failure: an I/O error (or the stall deadline) closes the connection;
// every pending call on it fails with that error, and the next call dials
// a new connection. A call whose command was never written is tried once
// more on the new one; a call that was written is not (it may have run):
// whether it may be repeated is the caller's to decide.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// ErrClosed is the error of a call on a closed Pipe, or in flight when it
// was closed.
var ErrClosed = errors.New("pipeline: closed")

// DialFunc dials a connection to the server. It must pass the socket it
// dials through wrap and build the redis.Conn on what wrap returns, so
// that the Pipe owns the socket's deadlines once the connection is made
// (redigo's own read and write timeouts are then ignored). Until it
// returns, deadlines pass through: the TLS handshake, AUTH and SELECT are
// bounded as usual.
type DialFunc func(ctx context.Context, wrap func(net.Conn) net.Conn) (redis.Conn, error)

// Cmd is one command of a batch.
type Cmd struct {
	Name string
	Args []any
}

// Result is one command's reply, or its error: a redis.Error the server
// answered, or the failure of the connection or of the wait.
type Result struct {
	Reply any
	Err   error
}

// Pipe is the auto-pipelining client of one server. Its methods are safe
// for concurrent use.
type Pipe struct {
	dial   DialFunc
	slots  []slot
	next   atomic.Uint32
	closed atomic.Bool
	wg     sync.WaitGroup // the goroutines of every connection ever made
}

// slot holds one connection, dialled on first use and again after it
// failed. One caller dials; the others wait for it within their deadlines.
type slot struct {
	cur     atomic.Pointer[conn]
	mu      sync.Mutex
	dialing chan struct{} // closed when the dial in progress ends
	dialBy  time.Time     // the deadline of the dial in progress, or of the last
	dialErr error
}

// New returns a Pipe over conns connections (at least 1), each dialled
// with dial on first use. It does no I/O.
func New(conns int, dial DialFunc) *Pipe {
	return &Pipe{dial: dial, slots: make([]slot, max(conns, 1))}
}

// Do sends one command and waits for its reply until deadline or the end
// of ctx. A reply error of the server is returned as the redis.Error.
func (p *Pipe) Do(ctx context.Context, deadline time.Time, cmd string, args []any) (any, error) {
	pd := getPending(cmd, args, deadline)
	for try := 0; ; try++ {
		pc, err := p.get(ctx, deadline)
		if err != nil {
			putPending(pd)
			return nil, err
		}
		err = pc.enqueue(pd)
		if err == nil {
			return pc.wait(ctx, pd)
		}
		if try > 0 || p.closed.Load() {
			putPending(pd)
			return nil, err
		}
		// The connection broke between get and enqueue: nothing was sent,
		// so a new connection may take the call.
	}
}

// DoAll sends cmds together (one write and flush when the connection is
// idle) and sets out[i] to the reply or error of cmds[i]. out must be as
// long as cmds.
func (p *Pipe) DoAll(ctx context.Context, deadline time.Time, cmds []Cmd, out []Result) {
	pds := make([]*pending, len(cmds))
	for i, c := range cmds {
		pds[i] = getPending(c.Name, c.Args, deadline)
	}
	var pc *conn
	var err error
	for try := 0; ; try++ { // as in Do: once more if the connection broke before enqueue
		if pc, err = p.get(ctx, deadline); err != nil {
			break
		}
		if err = pc.enqueue(pds...); err == nil || try > 0 || p.closed.Load() {
			break
		}
	}
	if err != nil {
		for i, pd := range pds {
			putPending(pd)
			out[i] = Result{Err: err}
		}
		return
	}
	for i, pd := range pds {
		reply, err := pc.wait(ctx, pd)
		out[i] = Result{Reply: reply, Err: err}
	}
}

// Close closes every connection and waits for their goroutines. Calls in
// flight fail with ErrClosed, and so do later ones.
func (p *Pipe) Close() {
	p.closed.Store(true)
	for i := range p.slots {
		s := &p.slots[i]
		s.mu.Lock()
		pc := s.cur.Swap(nil)
		s.mu.Unlock()
		if pc != nil {
			pc.mu.Lock()
			pc.breakLocked(ErrClosed)
			pc.mu.Unlock()
		}
	}
	p.wg.Wait()
}

// get returns a live connection, dialling one if needed.
func (p *Pipe) get(ctx context.Context, deadline time.Time) (*conn, error) {
	s := &p.slots[0]
	if len(p.slots) > 1 {
		s = &p.slots[p.next.Add(1)%uint32(len(p.slots))]
	}
	if pc := s.cur.Load(); pc != nil && !pc.broken.Load() {
		return pc, nil
	}
	return p.redial(ctx, s, deadline)
}

func (p *Pipe) redial(ctx context.Context, s *slot, deadline time.Time) (*conn, error) {
	for {
		s.mu.Lock()
		if pc := s.cur.Load(); pc != nil && !pc.broken.Load() {
			s.mu.Unlock()
			return pc, nil
		}
		if p.closed.Load() {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		ch := s.dialing
		if ch == nil {
			return p.dialLocked(ctx, s, deadline)
		}
		s.mu.Unlock()
		// Someone dials: wait for it. If its dial ran out of its own time,
		// try again with ours.
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-ch:
			t.Stop()
		case <-t.C:
			return nil, deadlineErr(ctx, deadline)
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		s.mu.Lock()
		pc, err, by, again := s.cur.Load(), s.dialErr, s.dialBy, s.dialing != nil
		s.mu.Unlock()
		switch {
		case pc != nil && !pc.broken.Load():
			return pc, nil
		case again: // another dial began: wait for that one
		case err != nil && !(isTimeout(err) && by.Before(deadline)):
			return nil, err
		}
	}
}

// dialLocked dials s's connection and starts its goroutines. Called with
// s.mu held; releases it.
func (p *Pipe) dialLocked(ctx context.Context, s *slot, deadline time.Time) (*conn, error) {
	ch := make(chan struct{})
	s.dialing, s.dialBy = ch, deadline
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		s.dialBy = dl
	}
	s.mu.Unlock()

	dctx, cancel := context.WithDeadline(ctx, deadline)
	var nc *netConn
	rc, err := p.dial(dctx, func(c net.Conn) net.Conn {
		nc = &netConn{Conn: c}
		return nc
	})
	cancel()
	if dl, ok := ctx.Deadline(); ok && err != nil && isTimeout(err) && !time.Now().Before(dl) {
		err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err) // ctx's deadline cut the dial short
	}
	if err == nil && nc == nil {
		rc.Close()
		err = errors.New("pipeline: the dial function did not wrap its socket")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.dialing, s.dialErr = nil, err
	defer close(ch)
	if err != nil {
		return nil, err
	}
	if p.closed.Load() {
		rc.Close()
		s.dialErr = ErrClosed
		return nil, ErrClosed
	}
	pc := &conn{rc: rc, nc: nc, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	nc.pc.Store(pc) // from now on the pipe owns the deadlines
	p.wg.Add(2)
	go pc.readLoop(&p.wg)
	go pc.writeLoop(&p.wg)
	s.cur.Store(pc)
	return pc, nil
}

// isTimeout reports an error of a deadline or timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// deadlineErr is the error of a call that reached deadline: ctx's when
// ctx's deadline was the bound (ctx.Err() may not be set yet), else
// os.ErrDeadlineExceeded, the server's silence.
func deadlineErr(ctx context.Context, deadline time.Time) error {
	if dl, ok := ctx.Deadline(); ok && !dl.After(deadline) {
		return context.DeadlineExceeded
	}
	return os.ErrDeadlineExceeded
}
