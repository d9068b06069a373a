package postgres

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
)

// notifyChannel is the NOTIFY channel of every client: a release sends the
// key's id (KeyID, in decimal) on it. Clients of other namespaces ignore
// ids they do not wait for.
const notifyChannel = "mutexkit"

// watcher is one Watch registration.
type watcher struct{ ch chan<- struct{} }

func (w *watcher) send() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// listener is a client's one LISTEN connection, started by the first Watch
// and stopped by Close. It wakes the watchers of a key when a release of
// that key is notified, and every watcher whenever it (re)connects, since
// releases may have gone unheard meanwhile.
type listener struct {
	l *locker

	mu       sync.Mutex
	started  bool
	closed   bool
	cn       *pq.ListenerConn
	stop     chan struct{}
	watchers map[int64]map[*watcher]struct{}
}

func newListener(l *locker) *listener {
	return &listener{l: l, stop: make(chan struct{}), watchers: make(map[int64]map[*watcher]struct{})}
}

// Watch registers wake for releases of key. Wake-ups come from NOTIFY on
// the client's LISTEN connection, opened by the first Watch (a release
// missed while it connects is covered by waking everyone once it listens),
// and from this client's own releases. Clients made by NewDBConnector
// without WithListenDSN have no LISTEN connection and return
// driver.ErrUnimplemented: package mutex then polls.
func (l *locker) Watch(key string, wake chan<- struct{}) (func(), error) {
	if wake == nil {
		return nil, fmt.Errorf("postgres: nil wake channel: %w", driver.ErrInvalid)
	}
	if l.listener == nil {
		return nil, fmt.Errorf("postgres: no LISTEN connection (NewDBConnector without WithListenDSN): %w", driver.ErrUnimplemented)
	}
	return l.listener.watch(KeyID(l.cfg.namespace, key), wake)
}

func (ls *listener) watch(id int64, wake chan<- struct{}) (func(), error) {
	w := &watcher{ch: wake}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		return nil, errClosedLock
	}
	set := ls.watchers[id]
	if set == nil {
		set = make(map[*watcher]struct{})
		ls.watchers[id] = set
	}
	set[w] = struct{}{}
	if !ls.started {
		ls.started = true
		ls.l.wg.Add(1)
		go ls.run()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			ls.mu.Lock()
			defer ls.mu.Unlock()
			if set := ls.watchers[id]; set != nil {
				delete(set, w)
				if len(set) == 0 {
					delete(ls.watchers, id)
				}
			}
		})
	}, nil
}

// wake wakes the watchers of id: a release by this client needs no round
// trip through the server to wake its own waiters.
func (l *locker) wake(id int64) {
	if l.listener != nil {
		l.listener.wake(id)
	}
}

func (l *locker) wakeAll() {
	if l.listener != nil {
		l.listener.wakeAll()
	}
}

func (ls *listener) wake(id int64) {
	ls.mu.Lock()
	for w := range ls.watchers[id] {
		w.send()
	}
	ls.mu.Unlock()
}

func (ls *listener) wakeAll() {
	ls.mu.Lock()
	for _, set := range ls.watchers {
		for w := range set {
			w.send()
		}
	}
	ls.mu.Unlock()
}

// run keeps the LISTEN connection up until close.
func (ls *listener) run() {
	defer ls.l.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		ch := make(chan *pq.Notification, 64)
		cn, err := pq.NewListenerConn(ls.dsn(), ch)
		if err == nil {
			ls.mu.Lock()
			if ls.closed {
				ls.mu.Unlock()
				cn.Close()
				return
			}
			ls.cn = cn
			ls.mu.Unlock()
			_, err = cn.Listen(notifyChannel)
			if err != nil {
				cn.Close()
			}
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			ls.wakeAll() // releases before LISTEN took effect went unheard
			for n := range ch {
				if id, err := strconv.ParseInt(n.Extra, 10, 64); err == nil {
					ls.wake(id)
				}
			}
			ls.wakeAll() // connection lost: waiters poll until it is back
		}
		ls.mu.Lock()
		ls.cn = nil
		ls.mu.Unlock()
		select {
		case <-ls.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// dsn is the client's DSN with its application_name, and a connect
// timeout unless the DSN has one, so that close never waits long on a
// connection attempt.
func (ls *listener) dsn() string {
	d := ls.l.dsn.pq + " application_name='" + ls.l.appName + "'"
	if ls.l.dsn.pqConfig.ConnectTimeout == 0 {
		d += " connect_timeout='10'"
	}
	return d
}

func (ls *listener) close() {
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		return
	}
	ls.closed = true
	close(ls.stop)
	cn := ls.cn
	ls.watchers = nil
	ls.mu.Unlock()
	if cn != nil {
		cn.Close() // closes ch, so run returns
	}
}

// listenerUp reports whether the LISTEN connection is up (for tests).
func (l *locker) listenerUp() bool {
	if l.listener == nil {
		return false
	}
	l.listener.mu.Lock()
	defer l.listener.mu.Unlock()
	return l.listener.cn != nil
}
