package postgres

import (
	"sync"

	"github.com/mutexkit/mutexkit/driver"
)

// waits is what a client knows of its waiting Locks' places in the queue
// (see QueueTable): whose Watch to wake when a release names its owner,
// and whether a waiting attempt can be answered without a round trip.
//
// Package mutex, while it waits, makes an attempt on every wake-up and on
// a backoff timer that starts at a few milliseconds. A waiter behind
// others needs none of the timer's attempts: its place is kept for
// driver.QueueHold, and it is notified when it is first in line and the
// key is released. So an attempt by a waiter whose last statement found
// live waiters ahead of it is answered ErrLocked from that answer, with no
// round trip, while all of these hold: no wake-up came for it since that
// statement was sent; the LISTEN connection was up before then and has
// stayed up; less than queueRefresh has passed (its place is then kept on
// the server); and none of the waiters ahead of it can have been passed
// over (the earliest of their deadlines has not come). The head of the
// queue always asks the server (its key may be freed without a
// notification: a holder whose session ended, SQL), as does every waiter
// of a client without a LISTEN connection.
type waits struct {
	mu     sync.Mutex
	places map[driver.Owner]*place
	pruned int64 // l.now() at the last prune
}

// queueRefresh is the longest a waiter's place goes without a statement
// that keeps it. Package mutex makes an attempt at least every
// driver.QueueHold/3, so the server sees one at least every 2/3 of
// QueueHold.
const queueRefresh = driver.QueueHold / 3

// place is one waiting owner.
type place struct {
	id    int64
	wake  chan<- struct{} // Watch's; nil when not watching
	woken uint64          // wake-ups so far
	seen  uint64          // woken as the last statement was sent
	gen   uint64          // the LISTEN connection's generation then; 0: none
	until int64           // l.now() before which an attempt is answered from that statement; 0: ask
	last  int64           // l.now() at the last attempt
}

func (p *place) send() {
	p.woken++
	p.signal()
}

func (p *place) signal() {
	if p.wake != nil {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// queued reports whether owner's waiting attempt can be answered ErrLocked
// without a round trip (see waits), the LISTEN connection being at gen
// now (0: down).
func (w *waits) queued(owner driver.Owner, gen uint64, now int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.places[owner]
	if p == nil || gen == 0 || p.gen != gen || p.woken != p.seen || now >= p.until {
		return false
	}
	p.last = now
	return true
}

// sending records that a waiting attempt of owner on key id is about to be
// sent, the LISTEN connection being at gen.
func (w *waits) sending(owner driver.Owner, id int64, gen uint64, now int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.places == nil {
		w.places = make(map[driver.Owner]*place)
	}
	p := w.places[owner]
	if p == nil {
		w.pruneLocked(now)
		p = &place{id: id}
		w.places[owner] = p
	}
	p.seen, p.gen, p.until, p.last = p.woken, gen, 0, now
}

// behind records the answer of owner's statement sent at sent: live
// waiters are ahead of it, the first of whose deadlines comes ahead
// seconds later.
func (w *waits) behind(owner driver.Owner, sent int64, ahead float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p := w.places[owner]; p != nil {
		p.until = sent + min(int64(queueRefresh), int64(ahead*1e9))
	}
}

// drop forgets owner's place (granted, or gone), and reports whether it
// had one.
func (w *waits) drop(owner driver.Owner) (id int64, had bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.places[owner]
	if p == nil {
		return 0, false
	}
	delete(w.places, owner)
	return p.id, true
}

// watch registers wake for owner's wake-ups, and wakes it at once if one
// came since its last statement.
func (w *waits) watch(owner driver.Owner, id int64, wake chan<- struct{}) func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.places == nil {
		w.places = make(map[driver.Owner]*place)
	}
	p := w.places[owner]
	if p == nil {
		p = &place{id: id}
		w.places[owner] = p
	}
	p.wake = wake
	if p.woken != p.seen {
		p.signal()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			if w.places[owner] == p {
				p.wake = nil
			}
			w.mu.Unlock()
		})
	}
}

// wake wakes owner: a release notified it.
func (w *waits) wake(owner driver.Owner) {
	w.mu.Lock()
	if p := w.places[owner]; p != nil {
		p.send()
	}
	w.mu.Unlock()
}

// wakeKey wakes every waiter of key id (a NOTIFY on the broadcast
// channel, or a session of this client that held it ended).
func (w *waits) wakeKey(id int64) {
	w.mu.Lock()
	for _, p := range w.places {
		if p.id == id {
			p.send()
		}
	}
	w.mu.Unlock()
}

// wakeAll wakes every waiter: the LISTEN connection came up, or went down,
// so notifications may have been missed.
func (w *waits) wakeAll() {
	w.mu.Lock()
	for _, p := range w.places {
		p.send()
	}
	w.mu.Unlock()
}

// clear forgets every place (Close).
func (w *waits) clear() {
	w.mu.Lock()
	w.places = nil
	w.mu.Unlock()
}

// pruneLocked forgets, at most once per QueueHold, the places of owners
// that neither asked nor watched for two QueueHolds: an attempt that ended
// in an error after which package mutex does not release (its place on
// the server expired long ago).
func (w *waits) pruneLocked(now int64) {
	if now-w.pruned < int64(driver.QueueHold) {
		return
	}
	w.pruned = now
	for o, p := range w.places {
		if p.wake == nil && now-p.last > int64(2*driver.QueueHold) {
			delete(w.places, o)
		}
	}
}
