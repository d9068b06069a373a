package redlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Release deletes the key wherever owner holds it. It succeeds when a
// quorum released it, and returns driver.ErrNotHeld when too many nodes
// no longer had it for the lease to have been held.
func (l *locker) Release(ctx context.Context, key string, owner driver.Owner) error {
	if l.closed.Load() {
		return errClosed
	}
	// Each node's answer is bounded as for the acquire when this Locker
	// made the grant.
	h, mine := l.args(key, owner)
	if l.list() {
		err := l.releaseList(ctx, key, owner, h, mine)
		if err == nil || errors.Is(err, driver.ErrNotHeld) {
			l.untrack(key, owner)
		}
		return err
	}
	timeout := l.cfg.opTimeout()
	if mine {
		timeout = l.cfg.ttlTimeout(h.ttl)
	}
	member := l.waits.leave(owner)
	if member == "" && !mine {
		// Not a grant of this Locker: a Lock that gave up, whose wait may
		// have ended here (ErrDenied) while the nodes still queue it.
		member = owner.String() + l.waits.id
	}
	err := l.release(ctx, key, h, member, timeout)
	if err == nil || errors.Is(err, driver.ErrNotHeld) {
		l.untrack(key, owner)
	}
	return err
}

// release runs releaseScript for h, taking member ("" if none) out of the
// queue.
func (l *locker) release(ctx context.Context, key string, h heldKey, member any, timeout time.Duration) error {
	c := l.releaseCall(h, member)
	if l.single() {
		reply, err := l.nodes[0].do(ctx, timeout, c)
		switch {
		case err != nil:
			return fmt.Errorf("redlock: release: %w", err)
		case reply == int64(1):
			return nil
		}
		return fmt.Errorf("redlock: %w", driver.ErrNotHeld)
	}
	// The calls outlive ctx: once the outcome is known (or ctx ends) the
	// late nodes are still asked, in the background, each bounded by its
	// timeout.
	callCtx := context.WithoutCancel(ctx)
	var released, notHeld int
	g := gather(l, ctx.Done(), func(i int, n *node) result {
		if h.late != nil && h.late[i] {
			<-h.settled // the node's acquire answer first (gather.go)
		}
		reply, err := n.do(callCtx, timeout, c)
		return result{Reply: reply, Err: err}
	}, func(_ int, r result) bool {
		switch {
		case r.Err == nil && r.Reply == int64(1):
			released++
		case r.Err == nil && r.Reply == int64(0):
			notHeld++
		}
		return released >= l.quorum || notHeld > len(l.nodes)-l.quorum
	})
	if settled := g.finish(l, nil); settled != nil {
		l.haunt(key, h.owner, settled)
	}
	var t tally
	for i, r := range g.out {
		if g.answered[i] {
			t.add(l.nodes[i], r)
		}
	}
	switch {
	case t.done >= l.quorum:
		return nil
	case t.notHeld > len(l.nodes)-l.quorum:
		return fmt.Errorf("redlock: released on %d of %d nodes, gone from %d: %w", t.done, len(l.nodes), t.notHeld, driver.ErrNotHeld)
	case g.late > 0: // ctx ended first
		return fmt.Errorf("redlock: release: %w (it goes on in the background)", ctx.Err())
	}
	return l.quorumError("release", t.errs)
}

// releaseCall is the releaseScript call that releases h and takes member
// ("" if none: then the one of h's grant, if it ended a wait) out of the
// queue.
func (l *locker) releaseCall(h heldKey, member any) call {
	if member == "" && h.member != nil {
		member = h.member
	}
	c := newCall(releaseScript, 6)
	c.args = append(c.args, h.lock, h.queue, h.dls, h.rec, member, l.wakeArg)
	return c
}

// releaseOn runs c (a release or withdrawal) on the given nodes, for an
// attempt that failed. It runs even when ctx has ended: the attempt may
// have taken the key.
func (l *locker) releaseOn(ctx context.Context, timeout time.Duration, nodes []int, c call) {
	if len(nodes) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for _, i := range nodes {
		wg.Go(func() { l.nodes[i].do(ctx, timeout, c) })
	}
	wg.Wait()
}

// releaseAll releases many keys, and takes waiters out of their keys'
// queues, with one pipelined round trip per node (Close). Its error is
// the releases' (a waiter's place ends by itself after QueueHold).
func (l *locker) releaseAll(ctx context.Context, held map[string]heldKey, waits map[driver.Owner]*waiting) error {
	if l.list() {
		return l.releaseAllList(ctx, held, waits)
	}
	calls := make([]call, 0, len(held)+len(waits))
	for _, h := range held {
		calls = append(calls, l.releaseCall(h, ""))
	}
	for owner, w := range waits {
		h, _ := l.args(w.key, owner) // the owner alone: a key kept for it is given up
		calls = append(calls, l.releaseCall(h, w.member))
	}
	for _, t := range l.everywhere(ctx, l.cfg.opTimeout(), calls)[:len(held)] {
		if t.done < l.quorum && t.notHeld <= len(l.nodes)-l.quorum && len(t.errs) > 0 {
			return l.quorumError("release", t.errs) // one says it: the nodes are the same for every key
		}
	}
	return nil
}
