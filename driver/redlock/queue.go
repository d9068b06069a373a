package redlock

import (
	"encoding/hex"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// The wait queue, client side. A waiting attempt (AcquireRequest.Wait)
// runs waitScript, which queues its owner on the node by a member, the
// owner's 32 hex digits then the Locker's client id (16 hex digits), and
// an arrival stamp: the first attempt's time in µs, kept for the whole
// Lock, so that every node orders the same waiters alike and a node
// restarted empty gets their order back as they ask again. Ties go by
// member. A release keeps the key for the head and publishes its owner on
// its client's channel, <prefix>:wake:<client id>, to which each Locker
// subscribes once per node (watch.go): one release wakes one waiter. On a
// Redis Cluster the channel is the lock key's, <lock key>:wake:<client
// id>, published by SPUBLISH in the key's slot, and a Locker subscribes
// per key it waits on.
//
// A waiter's attempts need the server only when something may have
// changed for it: its first, one after a wake-up (or after the
// subscription was confirmed, when a wake-up may have been missed), one
// after an attempt that failed otherwise than by the nodes' refusal
// (again), and one every refreshEvery to keep its place (the node passes it over
// driver.QueueHold after its last). The others, which package mutex makes
// while it waits (its fallback polling, its retry right after Watch), are
// answered here: the key is kept for nobody else's sake by asking again,
// and a waiter not woken is not at the head of a released key. They go to
// the server all the same while fewer than a quorum of subscriptions are
// up, as a wake-up could then be lost.

// refreshEvery is how often a waiter's attempts reach the server when
// nothing woke it: with package mutex polling at least every QueueHold/3,
// its place is refreshed at least every 2*QueueHold/3.
const refreshEvery = driver.QueueHold / 3

// queueHoldMs is driver.QueueHold as the scripts take it.
var queueHoldMs any = driver.QueueHold.Milliseconds()

// waiting is one owner's wait, from its first waiting attempt until a
// grant or Release.
type waiting struct {
	key    string // the lock's key: Close takes the owner out of its queue
	member any    // owner hex + client id, boxed once
	stamp  any    // arrival, µs, boxed once
	sent   time.Time
	woken  bool
	wake   chan<- struct{} // Watch's, nil when none

	// unanswered: an attempt of this wait failed otherwise than by the
	// nodes' reply (a timeout, a broken connection) or had its grant taken
	// back, so a node may have run it later and queued the owner again.
	unanswered bool

	list listWait // the list protocol's (list.go)
}

// listWait is a wait's state under the list protocol (list.go).
type listWait struct {
	member, lease string    // its member and lease key; "" before its first enqueue
	wrote         time.Time // when its last lease write that succeeded was sent
	head          bool      // a wake-up named member: it heads the list
	place         int64     // its place (0: the head) at its last refresh; 0 before
	reaped        time.Time // when it last dropped dead heads (listReapScript)
}

// waiters is a Locker's waits by owner.
type waiters struct {
	mu     sync.Mutex
	id     string // this Locker's client id: 16 hex digits
	byOwn  map[driver.Owner]*waiting
	closed bool

	// On a Redis Cluster a wake-up is published in the lock key's slot
	// (watch.go): watchKey(key, true) is called under mu when a key gets
	// its first wait, watchKey(key, false) when its last one ends, so that
	// the watcher subscribes per key. nil: one channel for every key.
	// watchKey(key, true) reports false when the watcher has no room for
	// key (maxShardKeys): the key is then polled until its last wait ends,
	// its waiters' attempts all reaching the server and Watch refused, so
	// that package mutex polls it with its own backoff.
	watchKey func(key string, on bool) bool
	keys     map[string]int      // waits per key, when watchKey is set
	polled   map[string]struct{} // keys waited on but not subscribed
}

// sweepWaits is how many waits are kept before those nobody asked about
// for twice QueueHold (a caller of the driver's own that never released)
// are forgotten.
const sweepWaits = 1024

func (ws *waiters) init() {
	var b [8]byte
	o := driver.NewOwner()
	copy(b[:], o[:])
	ws.id = hex.EncodeToString(b[:])
	ws.byOwn = make(map[driver.Owner]*waiting)
}

// ask returns owner's wait, begun now if it had none, and whether this
// attempt must reach the server (send); if so it counts as sent now.
// subsUp says whether enough subscriptions are up to trust that no wake-up
// was lost.
func (ws *waiters) ask(key string, owner driver.Owner, subsUp bool) (w *waiting, send bool) {
	now := time.Now()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w = ws.byOwn[owner]
	if w == nil {
		if len(ws.byOwn) >= sweepWaits {
			for o, x := range ws.byOwn {
				if now.Sub(x.sent) > 2*driver.QueueHold && x.wake == nil {
					ws.forget(o, x)
				}
			}
		}
		w = &waiting{key: key, member: owner.String() + ws.id, stamp: now.UnixMicro()}
		ws.keep(owner, w)
	} else if subsUp && !w.woken && now.Sub(w.sent) < refreshEvery && !ws.isPolled(key) {
		return w, false
	}
	w.sent, w.woken = now, false
	return w, true
}

// again makes w's next attempt reach the server: its last one may have
// changed the node without telling it (a timeout, a grant withdrawn, or
// too late), and a node may now keep the key for it without a wake-up.
func (ws *waiters) again(w *waiting) {
	ws.mu.Lock()
	w.woken, w.unanswered = true, true
	ws.mu.Unlock()
}

// granted ends owner's wait w, which a grant ended, and returns the member
// its release must take out of the queue: none when every attempt of it
// was answered on a single node, whose grant took it out (waitScript).
// (A resend the driver does not see, such as a go-redis client's
// MaxRetries after a read timed out, can queue the owner again only while
// the key is not its own: its lease was lost by then.)
func (ws *waiters) granted(owner driver.Owner, w *waiting, single bool) any {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.byOwn[owner] != w { // already forgotten (Close, or swept)
		return nil
	}
	ws.forget(owner, w)
	if single && !w.unanswered {
		return nil
	}
	return w.member
}

// leave returns owner's member if it waits ("" if not), and forgets its
// wait (a grant or a Release ends it).
func (ws *waiters) leave(owner driver.Owner) any {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byOwn[owner]
	if w == nil {
		return ""
	}
	ws.forget(owner, w)
	return w.member
}

// keep records owner's new wait w (unless the Locker closed). Callers
// hold mu.
func (ws *waiters) keep(owner driver.Owner, w *waiting) {
	if ws.closed {
		return
	}
	ws.byOwn[owner] = w
	if ws.watchKey != nil {
		if ws.keys[w.key]++; ws.keys[w.key] == 1 && !ws.watchKey(w.key, true) {
			ws.polled[w.key] = struct{}{}
		}
	}
}

// isPolled reports whether key's waiters poll: on a Redis Cluster, no
// subscription could be made for it. Callers hold mu.
func (ws *waiters) isPolled(key string) bool {
	_, ok := ws.polled[key]
	return ok
}

// forget ends owner's wait w. Callers hold mu.
func (ws *waiters) forget(owner driver.Owner, w *waiting) {
	delete(ws.byOwn, owner)
	if ws.watchKey != nil {
		if ws.keys[w.key]--; ws.keys[w.key] <= 0 {
			delete(ws.keys, w.key)
			if ws.isPolled(w.key) {
				delete(ws.polled, w.key)
			} else {
				ws.watchKey(w.key, false)
			}
		}
	}
}

// watch registers wake for owner's wake-ups, and wakes it at once if one
// came since its last attempt. ok is false when key is polled (no
// subscription: nothing would wake it).
func (ws *waiters) watch(key string, owner driver.Owner, wake chan<- struct{}) (stop func(), ok bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byOwn[owner]
	if w == nil { // not queued (yet): its next attempt goes to the server
		w = &waiting{key: key, member: owner.String() + ws.id, stamp: time.Now().UnixMicro(), woken: true}
		ws.keep(owner, w)
	}
	if ws.isPolled(key) {
		return nil, false
	}
	w.wake = wake
	if w.woken {
		notify(wake)
	}
	return func() {
		ws.mu.Lock()
		if w.wake == wake {
			w.wake = nil
		}
		ws.mu.Unlock()
	}, true
}

// woken delivers a published wake-up: payload is the owner's hex digits,
// or, by the list protocol, the member at the head (list.go), which an
// earlier member's late wake-up does not match.
func (ws *waiters) woken(payload []byte) {
	var owner driver.Owner
	if len(payload) < ownerLen {
		return
	}
	if _, err := hex.Decode(owner[:], payload[:ownerLen]); err != nil {
		return
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byOwn[owner]
	if w == nil {
		return
	}
	if len(payload) > ownerLen {
		if string(payload) != w.list.member {
			return
		}
		w.list.head = true
	}
	w.woken = true
	notify(w.wake)
}

// listState returns w's list protocol state, and whether an attempt of
// it went unanswered (again).
func (ws *waiters) listState(w *waiting) (listWait, bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return w.list, w.unanswered
}

// setMember records w's new member and lease key, before they are sent.
func (ws *waiters) setMember(w *waiting, member, lease string) {
	ws.mu.Lock()
	w.list = listWait{member: member, lease: lease}
	ws.mu.Unlock()
}

// retry makes w's next attempt reach the server (its last one failed,
// though the wait's member stands).
func (ws *waiters) retry(w *waiting) {
	ws.mu.Lock()
	w.woken = true
	ws.mu.Unlock()
}

// answered records that w's lease write sent at sent succeeded.
func (ws *waiters) answered(w *waiting, sent time.Time) {
	ws.mu.Lock()
	w.list.wrote, w.unanswered = sent, false
	ws.mu.Unlock()
}

// stalled records w's place in the list, found by a refresh, and reports
// whether w should drop dead heads: its place is the one the last
// refresh found (the queue has not moved: its head may be dead), and it
// is next in line, or has not reaped for a QueueHold.
func (ws *waiters) stalled(w *waiting, pos int64) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	same := w.list.place == pos
	w.list.place = pos
	if !same || (pos != 1 && time.Since(w.list.reaped) < driver.QueueHold) {
		return false
	}
	w.list.reaped = time.Now()
	return true
}

// leaveList is leave for the list protocol: owner's wait state, and
// whether it waited.
func (ws *waiters) leaveList(owner driver.Owner) (listWait, bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byOwn[owner]
	if w == nil {
		return listWait{}, false
	}
	ws.forget(owner, w)
	return w.list, true
}

// wakeAll wakes every waiter: a subscription was (re)confirmed, and a
// wake-up may have been published while it was down.
func (ws *waiters) wakeAll() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.byOwn {
		w.woken = true
		notify(w.wake)
	}
}

// wakeKey wakes every waiter on key: the subscription to that key's
// channel (Redis Cluster) was (re)confirmed.
func (ws *waiters) wakeKey(key string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.byOwn {
		if w.key == key {
			w.woken = true
			notify(w.wake)
		}
	}
}

// close forgets every wait, and returns them: Close takes their owners
// out of the queues.
func (ws *waiters) close() map[driver.Owner]*waiting {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.closed = true
	waits := ws.byOwn
	ws.byOwn = make(map[driver.Owner]*waiting)
	ws.keys, ws.polled = nil, nil // the watcher has stopped: no key to unwatch
	return waits
}

// notify sends on wake without blocking; nil is no one.
func notify(wake chan<- struct{}) {
	if wake == nil {
		return
	}
	select {
	case wake <- struct{}{}:
	default:
	}
}
