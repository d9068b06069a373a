package redlock

import (
	"context"
	"fmt"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Renew extends every lease of batch with one pipelined round trip per
// node. A lease is renewed when a quorum extended it within its validity;
// it is lost (driver.ErrNotHeld) when so many nodes no longer have it that
// no quorum can.
func (l *locker) Renew(ctx context.Context, batch []driver.Renewal) {
	start := time.Now()
	if len(batch) == 0 {
		return
	}
	if l.closed.Load() {
		for i := range batch {
			batch[i].Err = errClosed
		}
		return
	}
	if l.list() {
		l.renewList(ctx, batch, start)
		return
	}
	calls := make([]call, 0, len(batch))
	sent := make([]int, 0, len(batch)) // the batch index of each call
	var minTTL, maxValidity time.Duration
	for i := range batch {
		r := &batch[i]
		ttl, validity := l.cfg.validity(r.TTL)
		if validity <= 0 { // never sent: PEXPIRE 0 would delete the key
			r.Err = errNoValidity(r.TTL)
			continue
		}
		h, _ := l.args(r.Key, r.Owner)
		c := newCall(extendScript, 3)
		c.args = append(c.args, h.lock, h.rec, l.ttlArg(ttl.Milliseconds()))
		calls = append(calls, c)
		sent = append(sent, i)
		if minTTL == 0 || ttl < minTTL {
			minTTL = ttl
		}
		maxValidity = max(maxValidity, validity)
	}
	if len(calls) == 0 {
		return
	}
	var tallies []tally
	if timeout := l.renewTimeout(ctx, minTTL, len(calls)); l.cfg.acks.on() {
		// One WAIT per node's batch, no longer than its longest lease could use.
		tallies = l.everywhereAcked(ctx, timeout, calls, l.cfg.acks.within(maxValidity))
	} else {
		tallies = l.everywhere(ctx, timeout, calls)
	}
	elapsed := time.Since(start)
	for k, t := range tallies {
		r := &batch[sent[k]]
		_, validity := l.cfg.validity(r.TTL)
		switch {
		case t.done >= l.quorum && elapsed < validity:
			r.Validity, r.Err = validity, nil
		case t.done >= l.quorum:
			r.Err = fmt.Errorf("redlock: renewal took %v, longer than the validity %v", elapsed.Round(time.Millisecond), validity)
		case t.notHeld > len(l.nodes)-l.quorum:
			r.Err = fmt.Errorf("redlock: lease gone from %d of %d nodes: %w", t.notHeld, len(l.nodes), driver.ErrNotHeld)
			l.untrack(r.Key, r.Owner)
		case len(t.errs) > 0:
			r.Err = l.quorumError("renew", t.errs)
		default: // extended on too few, gone from too few: cannot tell yet
			r.Err = fmt.Errorf("redlock: renew: extended on %d of %d nodes, gone from %d: no quorum either way", t.done, len(l.nodes), t.notHeld)
		}
	}
}

// renewPerCall is what one more lease in a renewal batch may add to a
// node's answer: the node runs a script per lease, and the one client
// goroutine writes and reads them all.
const renewPerCall = 20 * time.Microsecond

// renewTimeout bounds each node's answer to a renewal of n leases of ttl:
// the acquire's bound, plus renewPerCall a lease, since thousands of
// leases take longer than one; but, once that exceeds the acquire's bound,
// at most half the time ctx leaves (the batch's loss deadline), so that a
// node that does not answer cannot hold the others' answers past it.
func (l *locker) renewTimeout(ctx context.Context, ttl time.Duration, n int) time.Duration {
	base := l.cfg.ttlTimeout(ttl)
	t := base + time.Duration(n)*renewPerCall
	if dl, ok := ctx.Deadline(); ok {
		t = min(t, max(time.Until(dl)/2, base))
	}
	return t
}
