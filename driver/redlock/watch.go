package redlock

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
)

// watcher delivers published releases to waiters. It keeps one
// subscription connection per node, dialled outside the pool and started
// with the first Watch: a release is published on every node where it
// deleted the key, so any node still up wakes the waiters, and a node down
// costs only its duplicate. Channels are subscribed while someone watches
// them and unsubscribed when the last watcher stops.
//
// A SUBSCRIBE is sent without waiting for its confirmation, so Watch costs
// no round trip; a release published before the server saw it would be
// missed, so the confirmation itself wakes the watchers (one spurious
// retry at worst). After a reconnection every channel is subscribed again
// and confirmed the same way.
type watcher struct {
	l *locker

	mu      sync.Mutex // held while writing to a subscription connection
	started bool
	stopped bool
	chans   map[string][]chan<- struct{} // channel (the lock key) -> wake channels
	subs    []*subscription
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// subscription is one node's subscription connection. conn is nil while
// disconnected; it is written under watcher.mu and read by its goroutine.
type subscription struct {
	n    *node
	conn redis.Conn
}

func (w *watcher) init(l *locker) {
	w.l = l
	w.chans = make(map[string][]chan<- struct{})
}

// add registers wake for channel ch, subscribing when it is the first.
func (w *watcher) add(ch string, wake chan<- struct{}) (func(), error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return nil, errClosed
	}
	if !w.started && !w.start() {
		return nil, errNoSubscription
	}
	list := w.chans[ch]
	if len(list) == 0 {
		w.send("SUBSCRIBE", ch)
	}
	w.chans[ch] = append(list, wake)
	var once sync.Once
	return func() { once.Do(func() { w.remove(ch, wake) }) }, nil
}

var errNoSubscription = fmt.Errorf("redlock: no pool can dial a subscription connection: %w", driver.ErrUnimplemented)

func (w *watcher) remove(ch string, wake chan<- struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.chans[ch]
	if i := slices.Index(list, wake); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) > 0 {
		w.chans[ch] = list
		return
	}
	delete(w.chans, ch)
	if !w.stopped {
		w.send("UNSUBSCRIBE", ch)
	}
}

// send writes a command to every connected subscription. Callers hold mu.
// A write that fails leaves the connection to its reader, which sees the
// error, reconnects and subscribes to every channel again.
func (w *watcher) send(cmd, ch string) {
	for _, s := range w.subs {
		if s.conn != nil {
			if s.conn.Send(cmd, ch) == nil {
				s.conn.Flush()
			}
		}
	}
}

// start launches one subscription goroutine per node that can dial.
// Callers hold mu.
func (w *watcher) start() bool {
	w.ctx, w.cancel = context.WithCancel(context.Background())
	for _, n := range w.l.nodes {
		if n.dial == nil {
			continue
		}
		s := &subscription{n: n}
		w.subs = append(w.subs, s)
		w.wg.Add(1)
		go w.run(s)
	}
	w.started = len(w.subs) > 0
	return w.started
}

// stop closes the subscription connections and waits for their
// goroutines.
func (w *watcher) stop() {
	w.mu.Lock()
	w.stopped = true
	for _, s := range w.subs {
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

// Reconnection backoff of a subscription.
const (
	minResubscribe = 50 * time.Millisecond
	maxResubscribe = 2 * time.Second
)

// run keeps s subscribed until stop: dial, subscribe to every watched
// channel, deliver messages, and on error start over after a backoff.
func (w *watcher) run(s *subscription) {
	defer w.wg.Done()
	backoff := minResubscribe
	for {
		dctx, cancel := context.WithTimeout(w.ctx, w.l.cfg.connectTimeout)
		conn, err := s.n.dial(dctx)
		cancel()
		if err == nil {
			began := time.Now()
			// It worked for a while: a subscription confirmed, or a
			// connection with none that lived until an idle cut-off (a
			// server's timeout spares only subscribed connections).
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

// serve subscribes conn to every watched channel and delivers what it
// receives until it fails. It reports whether the subscription was
// confirmed.
func (w *watcher) serve(s *subscription, conn redis.Conn) (confirmed bool) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		conn.Close()
		return false
	}
	s.conn = conn
	psc := redis.PubSubConn{Conn: conn}
	chans := make([]any, 0, len(w.chans))
	for ch := range w.chans {
		chans = append(chans, ch)
	}
	if len(chans) > 0 {
		psc.Subscribe(chans...)
	}
	w.mu.Unlock()

	_, blocking := conn.(redis.ConnWithTimeout)
	for {
		var msg any
		if blocking {
			msg = psc.ReceiveWithTimeout(0) // no deadline: the subscription idles
		} else {
			msg = psc.Receive()
		}
		switch m := msg.(type) {
		case redis.Message:
			w.wake(m.Channel)
		case redis.Subscription:
			if m.Kind == "subscribe" {
				confirmed = true
				w.wake(m.Channel) // a release may have come before the server subscribed us
			}
		case error:
			w.mu.Lock()
			if s.conn == conn {
				s.conn = nil
			}
			w.mu.Unlock()
			conn.Close()
			return confirmed
		}
	}
}

// wake sends, without blocking, to every watcher of ch.
func (w *watcher) wake(ch string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, wake := range w.chans[ch] {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}
