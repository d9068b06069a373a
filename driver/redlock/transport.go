package redlock

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver/redlock/internal/pipeline"
)

// transport carries a node's commands. Connect picks one per node: pooled
// (each call takes a connection of a pool) or pipelined (concurrent calls
// share round trips on the pipe's connections; a batch ending in WAIT
// takes a pooled connection). Both run a command once
// more, on a fresh connection, when the server had closed the one it met
// (idle.go). Errors come back as redigo or the network gave them:
// node.fail classifies them.
type transport interface {
	// do sends one command and returns its reply, by deadline.
	do(ctx context.Context, deadline time.Time, cmd string, args []any) (any, error)

	// doAll sends cmds in one round trip and sets out[i] to the reply or
	// error of cmds[i].
	doAll(ctx context.Context, deadline time.Time, cmds []pipeline.Cmd, out []result)

	// close closes what the driver made for the node (never an
	// application's pool).
	close()
}

// result is one command's reply or error.
type result = pipeline.Result

// pooled takes a connection of a pool for each call.
type pooled struct {
	pool *redis.Pool
	dial func(context.Context) (redis.Conn, error) // fresh connections (idle.go); nil: the pool's
	own  bool                                      // made by the driver: closed with the Locker

	closed atomic.Bool // close ran: a call still under way fails with pipeline.ErrClosed
}

func (p *pooled) do(ctx context.Context, deadline time.Time, cmd string, args []any) (any, error) {
	conn, err := p.get(ctx, deadline)
	if err != nil {
		return nil, err
	}
	reply, err := redis.DoWithTimeout(conn, until(deadline), cmd, args...)
	conn.Close()
	if peerClosed(err) {
		if conn, err = p.fresh(ctx, deadline); err == nil {
			reply, err = redis.DoWithTimeout(conn, until(deadline), cmd, args...)
			conn.Close()
		}
	}
	return reply, err
}

func (p *pooled) doAll(ctx context.Context, deadline time.Time, cmds []pipeline.Cmd, out []result) {
	conn, err := p.get(ctx, deadline)
	if err != nil {
		failAll(out, err)
		return
	}
	sendAll(conn, deadline, cmds, out)
	conn.Close()
	if waits(cmds) && !peerClosed(out[0].Err) {
		// Sent again whole or not at all: a WAIT alone on another
		// connection would count none of the batch's writes (acks.go).
		return
	}
	redo(cmds, out, func(i int) bool { return peerClosed(out[i].Err) }, nil, func(cmds []pipeline.Cmd, out []result) {
		conn, err := p.fresh(ctx, deadline)
		if err != nil {
			failAll(out, err)
			return
		}
		sendAll(conn, deadline, cmds, out)
		conn.Close()
	})
}

func (p *pooled) close() {
	if p.own {
		p.closed.Store(true)
		p.pool.Close()
	}
}

// get takes a connection from the pool. When it may have to dial, or to
// wait for a slot of a pool capped by MaxActive (Wait: another call may
// take the idle connection first), the wait is bounded by deadline too: a
// node that cannot be reached within the call's bound is as good as down.
// (The context costs allocations, so the usual case, an idle connection at
// hand in an uncapped pool, goes without.)
func (p *pooled) get(ctx context.Context, deadline time.Time) (redis.Conn, error) {
	if p.pool.Wait || p.pool.IdleCount() == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	conn, err := p.pool.GetContext(ctx)
	if err != nil && p.closed.Load() { // redigo's error for it is unexported
		err = fmt.Errorf("%w: %w", pipeline.ErrClosed, err)
	}
	return conn, err
}

// sendAll sends cmds on conn with one flush and reads their replies. A
// reply error fails its command alone; a failure of the connection fails
// every command not yet answered.
func sendAll(conn redis.Conn, deadline time.Time, cmds []pipeline.Cmd, out []result) {
	for _, c := range cmds {
		if err := conn.Send(c.Name, c.Args...); err != nil {
			failAll(out, err)
			return
		}
	}
	if err := conn.Flush(); err != nil {
		failAll(out, err)
		return
	}
	for i := range cmds {
		reply, err := redis.ReceiveWithTimeout(conn, until(deadline))
		if err != nil && !isReplyError(err) {
			failAll(out[i:], err)
			return
		}
		out[i] = result{Reply: reply, Err: err}
	}
}

// pipelined sends overlapping calls through the pipe; a call alone on
// its node, one command or a batch, takes a pooled connection, writing
// and reading itself with no goroutine handoff.
type pipelined struct {
	pipe   *pipeline.Pipe
	pooled *pooled
	busy   atomic.Int32 // calls of do under way
	solo   bool         // a call alone takes a pooled connection (tests turn it off)
}

func (p *pipelined) do(ctx context.Context, deadline time.Time, cmd string, args []any) (any, error) {
	alone := p.busy.Add(1) == 1
	defer p.busy.Add(-1)
	if alone && p.solo {
		return p.pooled.do(ctx, deadline, cmd, args)
	}
	reply, err := p.pipe.Do(ctx, deadline, cmd, args)
	if peerClosed(err) { // the connection broke: the pipe dials a new one
		reply, err = p.pipe.Do(ctx, deadline, cmd, args)
	}
	return reply, err
}

func (p *pipelined) doAll(ctx context.Context, deadline time.Time, cmds []pipeline.Cmd, out []result) {
	alone := p.busy.Add(1) == 1
	defer p.busy.Add(-1)
	if waits(cmds) || (alone && p.solo) { // WAIT would hold every call queued behind it on the pipe
		p.pooled.doAll(ctx, deadline, cmds, out)
		return
	}
	p.pipe.DoAll(ctx, deadline, cmds, out)
	redo(cmds, out, func(i int) bool { return peerClosed(out[i].Err) }, nil, func(cmds []pipeline.Cmd, out []result) {
		p.pipe.DoAll(ctx, deadline, cmds, out)
	})
}

func (p *pipelined) close() {
	p.pipe.Close()
	p.pooled.close()
}

// redo runs again, with run, the commands of cmds whose result match
// reports, each remade by remake (nil: as it was), and puts their new
// results in out.
func redo(cmds []pipeline.Cmd, out []result, match func(i int) bool, remake func(i int) pipeline.Cmd, run func([]pipeline.Cmd, []result)) {
	var again []int
	for i := range out {
		if match(i) {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return
	}
	sub := make([]pipeline.Cmd, len(again))
	for k, i := range again {
		if remake != nil {
			sub[k] = remake(i)
		} else {
			sub[k] = cmds[i]
		}
	}
	res := make([]result, len(again))
	run(sub, res)
	for k, i := range again {
		out[i] = res[k]
	}
}

// waits reports a batch that ends in WAIT (WithReplicaAcks): it must go
// on one connection of its own.
func waits(cmds []pipeline.Cmd) bool {
	return len(cmds) > 0 && cmds[len(cmds)-1].Name == "WAIT"
}

// failAll sets err on every result.
func failAll(out []result, err error) {
	for i := range out {
		out[i] = result{Err: err}
	}
}

// until is the time left to deadline, at least a millisecond: redigo
// reads a timeout of 0 as none.
func until(deadline time.Time) time.Duration {
	return max(time.Until(deadline), time.Millisecond)
}
