package redlock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// pipe is the auto-pipelining client of one node: a few long-lived
// connections (slots), each shared by every caller. A caller queues its
// command with a reply slot (a pending) and waits on it; commands queued
// together are written together and flushed once, so concurrent callers
// share round trips; one reader goroutine per connection reads the replies
// in order and completes the pendings.
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
// every pending call on it fails with that error (which node.fail wraps in
// driver.ErrUnavailable), and the next call dials a new connection.
type pipe struct {
	dial   func(context.Context) (redis.Conn, *pipeNetConn, error)
	slots  []pipeSlot
	next   atomic.Uint32
	closed atomic.Bool
	wg     sync.WaitGroup // the goroutines of every connection ever made
}

// pipeSlot holds one connection, dialled on first use and again after it
// failed. One caller dials; the others wait for it within their deadlines.
type pipeSlot struct {
	cur     atomic.Pointer[pconn]
	mu      sync.Mutex
	dialing chan struct{} // closed when the dial in progress ends
	dialBy  time.Time     // the deadline of the dial in progress, or of the last
	dialErr error
}

// deadlineSlack is added to a connection's stall deadline, so that it is
// moved (a timer update) at most once per slack under steady load.
const deadlineSlack = 10 * time.Millisecond

func newPipe(conns int, dial func(context.Context) (redis.Conn, *pipeNetConn, error)) *pipe {
	return &pipe{dial: dial, slots: make([]pipeSlot, max(conns, 1))}
}

// get returns a live connection, dialling one if needed.
func (p *pipe) get(ctx context.Context, deadline time.Time) (*pconn, error) {
	s := &p.slots[0]
	if len(p.slots) > 1 {
		s = &p.slots[p.next.Add(1)%uint32(len(p.slots))]
	}
	if pc := s.cur.Load(); pc != nil && !pc.broken.Load() {
		return pc, nil
	}
	return p.redial(ctx, s, deadline)
}

func (p *pipe) redial(ctx context.Context, s *pipeSlot, deadline time.Time) (*pconn, error) {
	for {
		s.mu.Lock()
		if pc := s.cur.Load(); pc != nil && !pc.broken.Load() {
			s.mu.Unlock()
			return pc, nil
		}
		if p.closed.Load() {
			s.mu.Unlock()
			return nil, errClosed
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
func (p *pipe) dialLocked(ctx context.Context, s *pipeSlot, deadline time.Time) (*pconn, error) {
	ch := make(chan struct{})
	s.dialing, s.dialBy = ch, deadline
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		s.dialBy = dl
	}
	s.mu.Unlock()

	dctx, cancel := context.WithDeadline(ctx, deadline)
	conn, nc, err := p.dial(dctx)
	cancel()
	if dl, ok := ctx.Deadline(); ok && err != nil && isTimeout(err) && !time.Now().Before(dl) {
		err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err) // ctx's deadline cut the dial short
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.dialing, s.dialErr = nil, err
	defer close(ch)
	if err != nil {
		return nil, err
	}
	if p.closed.Load() {
		conn.Close()
		s.dialErr = errClosed
		return nil, errClosed
	}
	pc := &pconn{conn: conn, nc: nc, wake: make(chan struct{}, 1), stop: make(chan struct{})}
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
// ctx's deadline was the bound (ctx.Err() may not be set yet), else a
// timeout of the node.
func deadlineErr(ctx context.Context, deadline time.Time) error {
	if dl, ok := ctx.Deadline(); ok && !dl.After(deadline) {
		return context.DeadlineExceeded
	}
	return os.ErrDeadlineExceeded
}

// close closes every connection and waits for their goroutines. Calls in
// flight fail.
func (p *pipe) close() {
	p.closed.Store(true)
	for i := range p.slots {
		s := &p.slots[i]
		s.mu.Lock()
		pc := s.cur.Swap(nil)
		s.mu.Unlock()
		if pc != nil {
			pc.mu.Lock()
			pc.breakLocked(errClosed)
			pc.mu.Unlock()
		}
	}
	p.wg.Wait()
}

// do sends one command and waits for its reply until deadline or the end
// of ctx.
func (p *pipe) do(ctx context.Context, deadline time.Time, cmd string, args []any) (any, error) {
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

// pcmd is one command of a batch.
type pcmd struct {
	cmd  string
	args []any
}

// doAll sends cmds together (one write and flush when the connection is
// idle) and fills out with each reply or error.
func (p *pipe) doAll(ctx context.Context, deadline time.Time, cmds []pcmd, out []result) {
	pds := make([]*pending, len(cmds))
	for i, c := range cmds {
		pds[i] = getPending(c.cmd, c.args, deadline)
	}
	var pc *pconn
	var err error
	for try := 0; ; try++ { // as in do: once more if the connection broke before enqueue
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
			out[i] = result{err: err, done: true}
		}
		return
	}
	for i, pd := range pds {
		reply, err := pc.wait(ctx, pd)
		out[i] = result{reply: reply, err: err, done: true}
	}
}

// pending is one command's reply slot, pooled. Its state is guarded by
// the mutex of the connection it is queued on.
type pending struct {
	cmd      string
	args     []any
	deadline time.Time
	reply    any
	err      error
	state    uint8
	done     chan struct{} // receives once when state becomes stDone
	timer    *time.Timer
}

const (
	stQueued    uint8 = iota // waiting to be written
	stSent                   // written (or being written): a reply will come
	stDone                   // reply or error set; done signalled
	stAbandoned              // its caller left: whoever holds it last recycles it
)

var pendingPool = sync.Pool{New: func() any { return &pending{done: make(chan struct{}, 1)} }}

func getPending(cmd string, args []any, deadline time.Time) *pending {
	pd := pendingPool.Get().(*pending)
	pd.cmd, pd.args, pd.deadline, pd.state = cmd, args, deadline, stQueued
	return pd
}

func putPending(pd *pending) {
	pd.cmd, pd.args, pd.reply, pd.err = "", nil, nil, nil
	pendingPool.Put(pd)
}

// pconn is one pipelined connection.
type pconn struct {
	conn redis.Conn
	nc   *pipeNetConn

	mu       sync.Mutex
	err      error      // set once: the connection is broken
	queue    []*pending // not yet written
	spare    []*pending // the last batch's slice, reused
	inflight []*pending // written, awaiting replies, in order; from head
	head     int
	writing  bool      // a caller or the writer goroutine drains the queue
	deadline time.Time // the stall deadline set on the socket; zero when idle
	wbuf     []pcmd    // the writer's copy of a batch

	broken atomic.Bool
	wake   chan struct{} // the writer goroutine has a queue to drain
	stop   chan struct{} // closed when broken
}

// enqueue queues pds; when no one is writing, the caller writes them (and
// whatever else is queued) itself.
func (pc *pconn) enqueue(pds ...*pending) error {
	pc.mu.Lock()
	if pc.err != nil {
		err := pc.err
		pc.mu.Unlock()
		return err
	}
	pc.queue = append(pc.queue, pds...)
	if pc.writing {
		pc.mu.Unlock()
		return nil
	}
	pc.writing = true
	if pc.head < len(pc.inflight) {
		// Others wait for replies: more calls are likely to come at once
		// (their callers, woken together). The writer goroutine gathers
		// them into one write.
		pc.wakeWriterLocked()
		pc.mu.Unlock()
		return nil
	}
	pc.writeBatchLocked()
	if len(pc.queue) > 0 && pc.err == nil {
		pc.wakeWriterLocked() // more came while we wrote: the writer goroutine takes over
	} else {
		pc.writing = false
	}
	pc.mu.Unlock()
	return nil
}

// wakeWriterLocked hands the queue to the writer goroutine.
func (pc *pconn) wakeWriterLocked() {
	select {
	case pc.wake <- struct{}{}:
	default:
	}
}

// writeLoop drains the queue whenever a caller hands it over.
func (pc *pconn) writeLoop(wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-pc.stop:
			return
		case <-pc.wake:
		}
		runtime.Gosched() // let the callers already runnable queue their calls too
		pc.mu.Lock()
		for len(pc.queue) > 0 && pc.err == nil {
			pc.writeBatchLocked()
		}
		pc.writing = false
		pc.mu.Unlock()
	}
}

// writeBatchLocked writes the queue and flushes it: the batch moves to the
// in-flight list first, so the reader finds each reply's slot. Called with
// mu held; releases it during the I/O.
func (pc *pconn) writeBatchLocked() {
	batch := pc.queue
	pc.queue, pc.spare = pc.spare[:0], nil
	w := pc.wbuf[:0]
	var latest time.Time
	for _, pd := range batch {
		if pd.state == stAbandoned { // its caller left before it was written
			putPending(pd)
			continue
		}
		pd.state = stSent
		pc.inflight = append(pc.inflight, pd)
		w = append(w, pcmd{pd.cmd, pd.args})
		if pd.deadline.After(latest) {
			latest = pd.deadline
		}
	}
	clear(batch)
	pc.spare = batch[:0]
	if len(w) == 0 {
		return
	}
	if latest.After(pc.deadline) {
		pc.deadline = latest.Add(deadlineSlack)
		pc.nc.Conn.SetDeadline(pc.deadline)
	}
	pc.wbuf = nil // ours while unlocked
	pc.mu.Unlock()
	var err error
	for _, c := range w {
		if err = pc.conn.Send(c.cmd, c.args...); err != nil {
			break
		}
	}
	if err == nil {
		err = pc.conn.Flush()
	}
	clear(w)
	pc.mu.Lock()
	pc.wbuf = w[:0]
	if err != nil {
		pc.breakLocked(err)
	}
}

// readLoop reads replies in order and completes their pendings, until the
// connection fails; then it fails every call still on it.
func (pc *pconn) readLoop(wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		reply, err := pc.conn.Receive()
		if err != nil {
			if _, ok := err.(redis.Error); !ok {
				pc.mu.Lock()
				pc.breakLocked(err)
				pc.failAllLocked()
				pc.mu.Unlock()
				return
			}
		}
		pc.mu.Lock()
		pd := pc.popLocked()
		switch {
		case pd == nil: // a reply to nothing: the stream cannot be trusted
			pc.breakLocked(errors.New("unexpected reply"))
			pc.failAllLocked()
			pc.mu.Unlock()
			return
		case pd.state == stAbandoned:
			pc.mu.Unlock()
			putPending(pd)
		default:
			pd.reply, pd.err, pd.state = reply, err, stDone
			pd.done <- struct{}{}
			pc.mu.Unlock()
		}
	}
}

func (pc *pconn) popLocked() *pending {
	if pc.head == len(pc.inflight) {
		return nil
	}
	pd := pc.inflight[pc.head]
	pc.inflight[pc.head] = nil
	pc.head++
	switch {
	case pc.head == len(pc.inflight):
		pc.inflight, pc.head = pc.inflight[:0], 0
	case pc.head >= 256 && pc.head*2 >= len(pc.inflight): // never empty under load: slide down
		n := copy(pc.inflight, pc.inflight[pc.head:])
		clear(pc.inflight[n:])
		pc.inflight, pc.head = pc.inflight[:n], 0
	}
	return pd
}

// breakLocked marks the connection failed and closes it, which ends the
// reader's Receive; the reader then fails what is left.
func (pc *pconn) breakLocked(err error) {
	if pc.err != nil {
		return
	}
	pc.err = err
	pc.broken.Store(true)
	close(pc.stop)
	pc.conn.Close()
}

// failAllLocked completes every call in flight or queued with the
// connection's error.
func (pc *pconn) failAllLocked() {
	for _, list := range [][]*pending{pc.inflight[pc.head:], pc.queue} {
		for _, pd := range list {
			if pd.state == stAbandoned {
				putPending(pd)
				continue
			}
			pd.reply, pd.err, pd.state = nil, pc.err, stDone
			pd.done <- struct{}{}
		}
		clear(list)
	}
	pc.inflight, pc.head, pc.queue = nil, 0, nil
}

// wait returns pd's reply, or gives up at pd's deadline or the end of ctx,
// leaving pd to the writer or reader.
func (pc *pconn) wait(ctx context.Context, pd *pending) (any, error) {
	d := time.Until(pd.deadline)
	if pd.timer == nil {
		pd.timer = time.NewTimer(d)
	} else {
		pd.timer.Reset(d)
	}
	var err error
	select {
	case <-pd.done:
		pd.timer.Stop()
		return pc.take(pd)
	case <-pd.timer.C:
		err = deadlineErr(ctx, pd.deadline)
	case <-ctx.Done():
		pd.timer.Stop()
		err = ctx.Err()
	}
	pc.mu.Lock()
	if pd.state == stDone { // it came as we gave up
		pc.mu.Unlock()
		<-pd.done
		return pc.take(pd)
	}
	pd.state = stAbandoned
	pc.mu.Unlock()
	return nil, err
}

func (pc *pconn) take(pd *pending) (any, error) {
	reply, err := pd.reply, pd.err
	putPending(pd)
	return reply, err
}

// onReadTimeout decides what a read that hit the socket deadline means:
// nothing when no call is in flight (the connection idles: the deadline is
// cleared) or when the deadline has moved since; a stall otherwise.
func (pc *pconn) onReadTimeout() (retry bool) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.err != nil {
		return false
	}
	if pc.head == len(pc.inflight) {
		pc.deadline = time.Time{}
		pc.nc.Conn.SetDeadline(time.Time{})
		return true
	}
	return time.Now().Before(pc.deadline)
}

// pipeNetConn is the socket under a pipelined connection. Once the pipe
// owns it, redigo's own deadline settings are ignored (the pipe sets the
// stall deadline on the socket itself), and a read that times out is
// retried unless the connection stalled. Before, during the dial (TLS
// handshake, AUTH, SELECT), they pass through.
type pipeNetConn struct {
	net.Conn
	pc atomic.Pointer[pconn]
}

func (c *pipeNetConn) Read(b []byte) (int, error) {
	for {
		n, err := c.Conn.Read(b)
		if n == 0 && err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			if pc := c.pc.Load(); pc != nil && pc.onReadTimeout() {
				continue
			}
		}
		return n, err
	}
}

func (c *pipeNetConn) SetDeadline(t time.Time) error {
	if c.pc.Load() != nil {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

func (c *pipeNetConn) SetReadDeadline(t time.Time) error {
	if c.pc.Load() != nil {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *pipeNetConn) SetWriteDeadline(t time.Time) error {
	if c.pc.Load() != nil {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}
