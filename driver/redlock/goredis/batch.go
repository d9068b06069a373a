package goredis

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// batcher makes concurrent calls of one node share round trips, as the
// redigo driver's pipe does: a call that finds none under way is sent
// alone (go-redis's Do, nothing more); calls made while one is under way
// queue, and the queue is sent as one go-redis pipeline as soon as the
// call under way ends, again and again until it is empty. So a node has at
// most one round trip of this Locker's single calls under way.
//
// Each caller waits until its own deadline or ctx's end, then leaves its
// call behind: a call not yet sent is skipped, the reply of one sent is
// dropped. A batch is bounded by the latest deadline of its calls (when
// the client heeds a ctx's deadline).
type batcher struct {
	t *transport

	mu     sync.Mutex
	busy   bool       // a call or batch is under way
	queue  []*pending // calls waiting for the next batch
	closed bool       // no goroutine is started any more (wait has been called)
	wg     sync.WaitGroup
}

// pending is a queued call. Its result is written before done is closed;
// a caller that left (gone) never reads it.
type pending struct {
	argv     []any
	deadline time.Time
	done     chan struct{}
	gone     bool // under batcher.mu
	reply    any
	err      error
}

func (b *batcher) do(ctx context.Context, deadline time.Time, argv []any) (any, error) {
	b.mu.Lock()
	if !b.busy {
		b.busy = true
		b.mu.Unlock()
		reply, err := b.t.do(ctx, deadline, argv)
		b.next()
		return reply, err
	}
	p := &pending{argv: argv, deadline: deadline, done: make(chan struct{})}
	b.queue = append(b.queue, p)
	b.mu.Unlock()

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-p.done:
		return p.reply, p.err
	case <-ctx.Done():
	case <-timer.C:
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-p.done: // answered as it left
		return p.reply, p.err
	default:
	}
	p.gone = true
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, context.DeadlineExceeded
}

// next hands what queued meanwhile to a goroutine that sends it, or marks
// the node idle. Once the Locker closed (a call that raced Close), the
// caller sends it itself.
func (b *batcher) next() {
	b.mu.Lock()
	switch {
	case len(b.queue) == 0:
		b.busy = false
	case b.closed:
		b.mu.Unlock()
		b.drain()
		return
	default:
		b.wg.Go(b.drain)
	}
	b.mu.Unlock()
}

// drain sends the queue as pipelines until it is empty.
func (b *batcher) drain() {
	for {
		b.mu.Lock()
		var batch []*pending
		for _, p := range b.queue {
			if !p.gone {
				batch = append(batch, p)
			}
		}
		b.queue = nil
		if len(batch) == 0 {
			b.busy = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.send(batch)
	}
}

// send runs batch as one pipeline, bounded by its latest deadline.
func (b *batcher) send(batch []*pending) {
	var deadline time.Time
	for _, p := range batch {
		if p.deadline.After(deadline) {
			deadline = p.deadline
		}
	}
	ctx, cancel := b.t.bound(context.Background(), deadline)
	defer cancel()
	pl := b.t.c.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, p := range batch {
		cmds[i] = pl.Do(ctx, p.argv...)
	}
	pl.Exec(ctx) // each command's error is its own
	for i, p := range batch {
		p.reply, p.err = b.t.reply(cmds[i].Val(), cmds[i].Err())
		close(p.done)
	}
}

// wait waits for the goroutines sending batches.
func (b *batcher) wait() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.wg.Wait()
}
