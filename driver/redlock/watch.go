package redlock

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/backend"
)

// watcher keeps this Locker subscribed to its own wake channel (queue.go)
// on every node, each on a connection dialled outside the pool, from the
// first waiting attempt or Watch until Close. A release is published on
// every node where it kept the key for the head, so any node still up
// wakes it, and a node down costs only its duplicate.
//
// The SUBSCRIBE is sent without waiting for its confirmation; a wake-up
// published before the server saw it would be missed, so the confirmation
// itself wakes every waiter of the Locker (one spurious attempt each at
// worst), after a reconnection too. Every wait has a deadline: the
// connection is pinged every subPing, and a read that sees nothing, not
// even the pong, for twice that (plus the node timeout) ends it, and it is
// dialled again with backoff.
type watcher struct {
	l *locker

	mu      sync.Mutex // held while writing to a subscription connection
	started bool
	stopped bool
	channel string // <prefix>:wake:<client id>
	subs    []*subscription
	up      atomic.Int32 // subscriptions confirmed and not yet failed
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// subscription is one node's subscription connection. conn is nil while
// disconnected; it is written under watcher.mu and read by its goroutine.
type subscription struct {
	n    *node
	conn backend.Sub
	up   bool // confirmed; under watcher.mu
}

// subPing is how often an idle subscription connection is pinged.
const subPing = 5 * time.Second

var errNoSubscription = fmt.Errorf("redlock: no pool can dial a subscription connection: %w", driver.ErrUnimplemented)

func (w *watcher) init(l *locker, channel string) {
	w.l = l
	w.channel = channel
}

// ensure starts the subscriptions if they are not yet, and reports
// whether any node can have one.
func (w *watcher) ensure() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return false
	}
	if !w.started {
		w.start()
	}
	return len(w.subs) > 0
}

// healthy reports whether at least n subscriptions are confirmed and up.
func (w *watcher) healthy(n int) bool { return int(w.up.Load()) >= n }

// start launches one subscription goroutine per node that can dial, and
// the pinger. Callers hold mu.
func (w *watcher) start() {
	w.started = true
	w.ctx, w.cancel = context.WithCancel(context.Background())
	for _, n := range w.l.nodes {
		if n.sub == nil {
			continue
		}
		s := &subscription{n: n}
		w.subs = append(w.subs, s)
		w.wg.Go(func() { w.run(s) })
	}
	if len(w.subs) > 0 {
		w.wg.Go(w.pinger)
	}
}

// stop closes the subscription connections and waits for their
// goroutines.
func (w *watcher) stop() {
	w.mu.Lock()
	w.stopped = true
	for _, s := range w.subs {
		w.down(s)
		if s.conn != nil {
			s.conn.Close() // ends the reader's Receive
			s.conn = nil
		}
	}
	if w.cancel != nil {
		w.cancel()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// down marks s unconfirmed. Callers hold mu.
func (w *watcher) down(s *subscription) {
	if s.up {
		s.up = false
		w.up.Add(-1)
	}
}

// pinger pings every connected subscription every subPing, so that a
// live connection always has something to read before its deadline.
// Writes are bounded by the connection's write timeout.
func (w *watcher) pinger() {
	t := time.NewTicker(subPing)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		for _, s := range w.subs {
			if s.conn != nil {
				s.conn.Ping()
			}
		}
		w.mu.Unlock()
	}
}

// Reconnection backoff of a subscription.
const (
	minResubscribe = 50 * time.Millisecond
	maxResubscribe = 2 * time.Second
)

// run keeps s subscribed until stop: dial, subscribe, deliver messages,
// and on error start over after a backoff.
func (w *watcher) run(s *subscription) {
	backoff := minResubscribe
	for {
		dctx, cancel := context.WithTimeout(w.ctx, w.l.cfg.connectTimeout)
		conn, err := s.n.sub(dctx)
		cancel()
		if err == nil {
			began := time.Now()
			if w.serve(s, conn) || time.Since(began) >= maxResubscribe {
				backoff = minResubscribe
			}
		}
		select {
		case <-w.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxResubscribe)
	}
}

// serve subscribes conn to the Locker's channel and delivers what it
// receives until it fails. It reports whether the subscription was
// confirmed.
func (w *watcher) serve(s *subscription, conn backend.Sub) (confirmed bool) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		conn.Close()
		return false
	}
	s.conn = conn
	conn.Subscribe(w.channel)
	w.mu.Unlock()

	readTimeout := 2*subPing + w.l.cfg.opTimeout()
	for {
		ev, err := conn.Receive(readTimeout)
		switch {
		case err != nil:
			w.mu.Lock()
			if s.conn == conn {
				s.conn = nil
				w.down(s)
			}
			w.mu.Unlock()
			conn.Close()
			return confirmed
		case ev.Kind == backend.Message:
			w.l.waits.woken(ev.Data)
		case ev.Kind == backend.Subscribed:
			confirmed = true
			w.mu.Lock()
			if !s.up && s.conn == conn {
				s.up = true
				w.up.Add(1)
			}
			w.mu.Unlock()
			w.l.waits.wakeAll() // a wake-up may have come before the server subscribed us
		}
	}
}
