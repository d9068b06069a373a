package pipeline

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// deadlineSlack is added to a connection's stall deadline, so that it is
// moved (a timer update) at most once per slack under steady load.
const deadlineSlack = 10 * time.Millisecond

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

// conn is one pipelined connection.
type conn struct {
	rc redis.Conn
	nc *netConn

	mu       sync.Mutex
	err      error      // set once: the connection is broken
	queue    []*pending // not yet written
	spare    []*pending // the last batch's slice, reused
	inflight []*pending // written, awaiting replies, in order; from head
	head     int
	writing  bool      // a caller or the writer goroutine drains the queue
	deadline time.Time // the stall deadline set on the socket; zero when idle
	wbuf     []Cmd     // the writer's copy of a batch

	broken atomic.Bool
	wake   chan struct{} // the writer goroutine has a queue to drain
	stop   chan struct{} // closed when broken
}

// enqueue queues pds; when no one is writing, the caller writes them (and
// whatever else is queued) itself.
func (pc *conn) enqueue(pds ...*pending) error {
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
func (pc *conn) wakeWriterLocked() {
	select {
	case pc.wake <- struct{}{}:
	default:
	}
}

// writeLoop drains the queue whenever a caller hands it over.
func (pc *conn) writeLoop(wg *sync.WaitGroup) {
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
func (pc *conn) writeBatchLocked() {
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
		w = append(w, Cmd{pd.cmd, pd.args})
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
		if err = pc.rc.Send(c.Name, c.Args...); err != nil {
			break
		}
	}
	if err == nil {
		err = pc.rc.Flush()
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
func (pc *conn) readLoop(wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		reply, err := pc.rc.Receive()
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
			pc.breakLocked(errors.New("pipeline: a reply to no command"))
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

func (pc *conn) popLocked() *pending {
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
func (pc *conn) breakLocked(err error) {
	if pc.err != nil {
		return
	}
	pc.err = err
	pc.broken.Store(true)
	close(pc.stop)
	pc.rc.Close()
}

// failAllLocked completes every call in flight or queued with the
// connection's error.
func (pc *conn) failAllLocked() {
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
func (pc *conn) wait(ctx context.Context, pd *pending) (any, error) {
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

func (pc *conn) take(pd *pending) (any, error) {
	reply, err := pd.reply, pd.err
	putPending(pd)
	return reply, err
}

// onReadTimeout decides what a read that hit the socket deadline means:
// nothing when no call is in flight (the connection idles: the deadline is
// cleared) or when the deadline has moved since; a stall otherwise.
func (pc *conn) onReadTimeout() (retry bool) {
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

// netConn is the socket under a pipelined connection. Once the pipe owns
// it, redigo's own deadline settings are ignored (the pipe sets the stall
// deadline on the socket itself), and a read that times out is retried
// unless the connection stalled. Before, during the dial (TLS handshake,
// AUTH, SELECT), they pass through.
type netConn struct {
	net.Conn
	pc atomic.Pointer[conn]
}

func (c *netConn) Read(b []byte) (int, error) {
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

func (c *netConn) SetDeadline(t time.Time) error {
	if c.pc.Load() != nil {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

func (c *netConn) SetReadDeadline(t time.Time) error {
	if c.pc.Load() != nil {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *netConn) SetWriteDeadline(t time.Time) error {
	if c.pc.Load() != nil {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}
