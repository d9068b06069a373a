package redlock

import (
	"context"
	"fmt"
	"slices"
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
//
// On a Redis Cluster (every node has a backend.Node.DialShard) a release
// publishes in the lock key's slot (scripts.go, shardedWake), so the
// watcher subscribes per key instead: from the key's first wait until
// subLinger after its last ends, one connection per key and node, to the
// master serving the key's slot (SSUBSCRIBE). When the slot moves, the server ends the
// subscription and it is dialled again, to the new master. Its
// confirmation wakes the key's waiters. At most maxShardKeys keys are
// subscribed at once (lingering ones make room first): the waiters of a
// key beyond them poll (queue.go), so that a Locker waiting on thousands
// of keys holds a bounded number of connections.
type watcher struct {
	l *locker

	mu      sync.Mutex // held while writing to a subscription connection
	started bool
	stopped bool
	channel string // <prefix>:wake:<client id>
	subs    []*subscription

	// Redis Cluster: each node's sharded dial (nil: not sharded), and the
	// subscriptions of each key waited on.
	shards []func(ctx context.Context, channel string) (backend.Sub, error)
	keys   map[string][]*subscription
	idle   map[string]*lingering // keys no longer waited on, their subscriptions ending

	up     atomic.Int32 // subscriptions confirmed and not yet failed
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// subscription is one node's subscription connection, or on a Redis
// Cluster one node's for one key. conn is nil while disconnected; it is
// written under watcher.mu and read by its goroutine.
type subscription struct {
	dial func(context.Context) (backend.Sub, error)
	key  string // Redis Cluster: the lock key whose channel it subscribes; "" else
	conn backend.Sub
	up   bool // confirmed; under watcher.mu

	ctx    context.Context // ends with the watcher, or when the key is no longer waited on
	cancel context.CancelFunc
}

// subPing is how often an idle subscription connection is pinged.
const subPing = 5 * time.Second

var errNoSubscription = fmt.Errorf("redlock: no pool can dial a subscription connection: %w", driver.ErrUnimplemented)

// errKeyPolled is Watch's answer on a Redis Cluster for a key beyond
// maxShardKeys: its waiters poll.
var errKeyPolled = fmt.Errorf("redlock: this Locker already subscribes to %d keys: poll: %w", maxShardKeys, driver.ErrUnimplemented)

func (w *watcher) init(l *locker, channel string) {
	w.l = l
	w.channel = channel
}

// shard makes l wake its waiters by sharded pub/sub: dials has each
// node's sharded dial (backend.Node.DialShard). Called before l is used.
func (l *locker) shard(dials []func(ctx context.Context, channel string) (backend.Sub, error)) {
	w := &l.watch
	w.shards = dials
	w.keys = make(map[string][]*subscription)
	w.idle = make(map[string]*lingering)
	l.wakeArg = shardedWake
	l.waits.keys = make(map[string]int)
	l.waits.polled = make(map[string]struct{})
	l.waits.watchKey = w.watchKey
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
	return len(w.subs) > 0 || w.shards != nil
}

// healthy reports whether at least n subscriptions are confirmed and up;
// on a Redis Cluster, whether every key's are.
func (w *watcher) healthy(n int) bool {
	if w.shards != nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		return int(w.up.Load()) == len(w.subs)
	}
	return int(w.up.Load()) >= n
}

// start launches one subscription goroutine per node that can dial, and
// the pinger. Callers hold mu.
func (w *watcher) start() {
	w.started = true
	w.ctx, w.cancel = context.WithCancel(context.Background())
	if w.shards != nil {
		w.wg.Go(w.pinger) // the keys' subscriptions start with their waits (watchKey)
		return
	}
	for _, n := range w.l.nodes {
		if n.sub == nil {
			continue
		}
		s := &subscription{dial: n.sub, ctx: w.ctx, cancel: func() {}}
		w.subs = append(w.subs, s)
		w.wg.Go(func() { w.run(s) })
	}
	if len(w.subs) > 0 {
		w.wg.Go(w.pinger)
	}
}

// subLinger is how long a key's subscriptions on a Redis Cluster outlive
// its last wait: a key contended again soon finds them up rather than
// dialling a connection per Lock.
const subLinger = driver.QueueHold

// maxShardKeys is how many keys a Locker on a Redis Cluster subscribes to
// at once, each on a connection per node: beyond them, waiters poll.
const maxShardKeys = 128

// lingering is a key no longer waited on whose subscriptions end at t.
type lingering struct{ t *time.Timer }

// watchKey starts (on) the subscriptions to key's channel on a Redis
// Cluster, one per node, or keeps those it has; or (off) has them end
// after subLinger. It reports whether key is subscribed: false when
// maxShardKeys keys are, none of them lingering, or the watcher stopped
// (the key's waiters then poll). waiters calls it under its own mu, so it
// never calls waiters itself.
func (w *watcher) watchKey(key string, on bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return false
	}
	if !w.started {
		w.start()
	}
	if !on {
		if _, ok := w.keys[key]; ok {
			lk := &lingering{}
			lk.t = time.AfterFunc(subLinger, func() { w.unwatch(key, lk) })
			w.idle[key] = lk
		}
		return false
	}
	if lk, ok := w.idle[key]; ok {
		lk.t.Stop()
		delete(w.idle, key)
	}
	if _, ok := w.keys[key]; ok {
		return true
	}
	if len(w.keys) >= maxShardKeys {
		for k, lk := range w.idle { // a lingering key makes room
			lk.t.Stop()
			w.drop(k)
			break
		}
		if len(w.keys) >= maxShardKeys {
			return false
		}
	}
	channel := keysOf(w.l.cfg.prefix, key).lock + ":wake:" + w.l.waits.id
	for _, shard := range w.shards {
		s := &subscription{key: key, dial: func(ctx context.Context) (backend.Sub, error) { return shard(ctx, channel) }}
		s.ctx, s.cancel = context.WithCancel(w.ctx)
		w.keys[key] = append(w.keys[key], s)
		w.subs = append(w.subs, s)
		w.wg.Go(func() { w.run(s) })
	}
	return true
}

// unwatch ends key's subscriptions, unless it was waited on again (or
// unwatched anew) since lk began.
func (w *watcher) unwatch(key string, lk *lingering) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.idle[key] != lk {
		return
	}
	w.drop(key)
}

// drop ends key's subscriptions at once. Callers hold mu.
func (w *watcher) drop(key string) {
	delete(w.idle, key)
	for _, s := range w.keys[key] {
		w.end(s)
	}
	delete(w.keys, key)
	w.subs = slices.DeleteFunc(w.subs, func(s *subscription) bool { return s.key == key })
}

// end closes s's connection and ends its goroutine. Callers hold mu.
func (w *watcher) end(s *subscription) {
	s.cancel()
	w.down(s)
	if s.conn != nil {
		s.conn.Close() // ends the reader's Receive
		s.conn = nil
	}
}

// stop closes the subscription connections and waits for their
// goroutines.
func (w *watcher) stop() {
	w.mu.Lock()
	w.stopped = true
	for _, s := range w.subs {
		w.end(s)
	}
	for _, lk := range w.idle {
		lk.t.Stop()
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
		dctx, cancel := context.WithTimeout(s.ctx, w.l.cfg.connectTimeout)
		conn, err := s.dial(dctx)
		cancel()
		if err == nil {
			began := time.Now()
			if w.serve(s, conn) || time.Since(began) >= maxResubscribe {
				backoff = minResubscribe
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxResubscribe)
	}
}

// serve subscribes conn to the Locker's channel (a key's sharded dial
// has subscribed it) and delivers what it receives until it fails or the
// server ends the subscription. It reports whether the subscription was
// confirmed.
func (w *watcher) serve(s *subscription, conn backend.Sub) (confirmed bool) {
	w.mu.Lock()
	if w.stopped || s.ctx.Err() != nil {
		w.mu.Unlock()
		conn.Close()
		return false
	}
	s.conn = conn
	if s.key == "" {
		conn.Subscribe(w.channel)
	}
	w.mu.Unlock()

	readTimeout := 2*subPing + w.l.cfg.opTimeout()
	for {
		ev, err := conn.Receive(readTimeout)
		switch {
		case err != nil, ev.Kind == backend.Unsubscribed: // a sharded channel's slot moved
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
			if s.key != "" {
				w.l.waits.wakeKey(s.key) // a wake-up may have come before the server subscribed us
			} else {
				w.l.waits.wakeAll()
			}
		}
	}
}
