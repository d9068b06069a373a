package redlock

import (
	"context"
	"encoding/hex"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Ghosts. A Redlock release returns once a quorum released, and an
// acquire once a quorum granted; the other nodes are asked in the
// background (gather.go), a node's release only once it answered the
// acquire. So a grant's SET to a node that was slow (a connection being
// dialled, a busy server) can land after its release returned: until the
// background release deletes it there, the node holds a key its owner has
// let go of, a ghost. A ghost keeps no one out for long, but an attempt
// that meets ghosts of released grants on more than N-quorum nodes (two
// grants' ghosts can be on three of five) would be refused, ErrLocked,
// with the key free: a TryLock right after an Unlock, in one client with
// no contention, said "held elsewhere on 3 of 5 nodes".
//
// The Locker remembers the owners it released while nodes were still to
// answer (haunt). An attempt that fails, but would have won had the
// nodes held by such owners granted, deletes them there (withdrawScript,
// comparing the owner) and asks those nodes again. Such an owner is never
// used again: package mutex makes a new one for every acquire. A ghost of
// another client is not known here; its own background release deletes
// it.

// ghost is an owner of key this Locker released.
type ghost struct {
	key   string
	owner driver.Owner
}

// sweepGhosts is how many ghosts are kept before those whose releases
// have all answered are forgotten.
const sweepGhosts = 64

// haunt records owner's grant of key, released while some nodes were
// still to answer, until settled is closed (they all have).
func (l *locker) haunt(key string, owner driver.Owner, settled <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ghosts) >= sweepGhosts {
		for g, ch := range l.ghosts {
			select {
			case <-ch:
				delete(l.ghosts, g)
			default:
			}
		}
	}
	l.ghosts[ghost{key, owner}] = settled
}

// isGhost reports whether holder (an owner's hex digits) is an owner of
// key this Locker released.
func (l *locker) isGhost(key string, holder []byte) bool {
	var g ghost
	if len(holder) != ownerLen {
		return false
	}
	if _, err := hex.Decode(g.owner[:], holder); err != nil {
		return false
	}
	g.key = key
	l.mu.Lock()
	_, ok := l.ghosts[g]
	l.mu.Unlock()
	return ok
}

// exorcise is for an attempt that failed with every answer in (out) and
// granted grants: if the nodes held by ghosts would have made up a
// quorum, it deletes each ghost and asks its node again, updating out,
// and reports that it did.
func (l *locker) exorcise(ctx context.Context, q *acquisition, out []answer, granted int) bool {
	var haunted []int
	for i, r := range out {
		if r.err == nil && r.token < 0 && l.isGhost(q.key, r.holder) {
			haunted = append(haunted, i)
		}
	}
	if granted+len(haunted) < l.quorum {
		return false
	}
	lock, queue, dls, cmds, timeout := q.grant.lock, q.grant.queue, q.grant.dls, q.cmds, q.timeout // not q, which would escape on every Acquire
	wakeArg := l.wakeArg
	var wg sync.WaitGroup
	for _, i := range haunted {
		wg.Go(func() {
			n, r := l.nodes[i], &out[i]
			sent := time.Now()
			c := newCall(withdrawScript, 8)
			c.args = append(c.args, lock, queue, dls, string(r.holder), "", 0, queueHoldMs, wakeArg) // the owner alone
			// Deleted, or gone by its own release meanwhile: ask again.
			if _, err := n.do(ctx, timeout, c); err == nil {
				r.token, r.holder, r.err = n.acquire(ctx, max(timeout-time.Since(sent), time.Millisecond), cmds)
			}
		})
	}
	wg.Wait()
	return true
}
