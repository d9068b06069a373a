package postgres

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
)

// notifyChannel is the NOTIFY channel of every client: a release that a
// client waits for sends the key's id (KeyID, in decimal) on it.
const notifyChannel = "mutexkit"

// Wake-ups: a NOTIFY costs the releaser a transaction id and a write to the
// server's notification queue (a third of an uncontended lock-unlock), so a
// release sends one only when some client waits for the key. A client that
// waits says so by holding a shared advisory lock on the key's "interest
// tag": the same classid and objid as the key, in the two-int4 key space
// (objsubid 2 in pg_locks), taken on its LISTEN connection. The unlock
// statement tries that tag exclusively (pg_try_advisory_xact_lock, released
// as the statement ends) and notifies only if it cannot. A waiter's tag is
// in place before it is told to try again, and a releaser checks after it
// unlocked, so no release between a waiter's attempt and its wait goes
// unannounced.

// watcher is one Watch registration.
type watcher struct {
	ch chan<- struct{}
	id int64

	// Guarded by listener.mu.
	stopped bool
	cn      *pq.ListenerConn // the connection its interest tag is held on; nil: none
}

func (w *watcher) send() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// unreg is an interest tag to give back on cn.
type unreg struct {
	cn *pq.ListenerConn
	id int64
}

// listener is a client's one LISTEN connection, started by the first Watch
// and stopped by Close. It holds the waiters' interest tags, wakes the
// watchers of a key when its release is notified, and wakes every watcher
// whenever it (re)connects or fails, since releases may have gone unheard.
type listener struct {
	l    *locker
	stop chan struct{}
	kick chan struct{} // work for the registrar

	mu       sync.Mutex
	started  bool
	closed   bool
	conn     *pq.ListenerConn // being opened or open, for close
	live     *pq.ListenerConn // LISTENing: tags can be taken on it
	watchers map[int64]map[*watcher]struct{}
	regs     []*watcher
	unregs   []unreg
}

func newListener(l *locker) *listener {
	return &listener{
		l:        l,
		stop:     make(chan struct{}),
		kick:     make(chan struct{}, 1),
		watchers: make(map[int64]map[*watcher]struct{}),
	}
}

// Watch registers wake for releases of key. It returns at once: the
// interest tag is taken in the background, and wake then receives a value
// so the waiter tries again (a release before the tag was in place is seen
// by that attempt). Releases by this client wake its own waiters directly.
// Clients made by FromDB without WithListenDSN have no LISTEN connection
// and return driver.ErrUnimplemented: package mutex then polls.
func (l *locker) Watch(key string, _ driver.Owner, wake chan<- struct{}) (func(), error) {
	if l.listener == nil {
		return nil, fmt.Errorf("postgres: no LISTEN connection (FromDB without WithListenDSN): %w", driver.ErrUnimplemented)
	}
	return l.listener.watch(KeyID(l.cfg.namespace, key), wake)
}

func (ls *listener) watch(id int64, wake chan<- struct{}) (func(), error) {
	w := &watcher{ch: wake, id: id}
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
		ls.l.wg.Add(2)
		go ls.run()
		go ls.registrar()
	}
	ls.regs = append(ls.regs, w)
	ls.kickLocked()
	var once sync.Once
	return func() { once.Do(func() { ls.unwatch(w) }) }, nil
}

func (ls *listener) unwatch(w *watcher) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	w.stopped = true
	if set := ls.watchers[w.id]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(ls.watchers, w.id)
		}
	}
	if w.cn != nil && w.cn == ls.live {
		ls.unregs = append(ls.unregs, unreg{w.cn, w.id})
		ls.kickLocked()
	}
	w.cn = nil
}

func (ls *listener) kickLocked() {
	select {
	case ls.kick <- struct{}{}:
	default:
	}
}

// registrar takes and gives back interest tags, batched: one statement per
// batch on the LISTEN connection. Shared advisory locks stack within a
// session, so each watcher holds its own and gives back its own.
func (ls *listener) registrar() {
	defer ls.l.wg.Done()
	for {
		select {
		case <-ls.stop:
			return
		case <-ls.kick:
		}
		ls.mu.Lock()
		cn := ls.live
		var regs []*watcher
		for _, w := range ls.regs {
			if !w.stopped && w.cn == nil {
				regs = append(regs, w)
			}
		}
		unregs := ls.unregs
		ls.regs, ls.unregs = nil, nil
		ls.mu.Unlock()
		if cn == nil {
			continue // (re)connecting: everyone is registered once it listens
		}
		var ids []int64
		for _, u := range unregs {
			if u.cn == cn {
				ids = append(ids, u.id)
			}
		}
		if len(ids) > 0 {
			cn.ExecSimpleQuery(tagQuery("pg_advisory_unlock_shared", ids)) // a failure ends the connection, and the tags with it
		}
		if len(regs) == 0 {
			continue
		}
		ids = ids[:0]
		for _, w := range regs {
			ids = append(ids, w.id)
		}
		if _, err := cn.ExecSimpleQuery(tagQuery("pg_advisory_lock_shared", ids)); err != nil {
			continue // the connection is failing: run reconnects and registers everyone
		}
		ls.mu.Lock()
		for _, w := range regs {
			if w.stopped || ls.live != cn {
				ls.unregs = append(ls.unregs, unreg{cn, w.id})
				ls.kickLocked()
				continue
			}
			w.cn = cn
			w.send() // try again: a release before the tag was in place went unannounced
		}
		ls.mu.Unlock()
	}
}

// tagQuery calls fn on the interest tag of each id, in one statement.
func tagQuery(fn string, ids []int64) string {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		hi, lo := LockTag(id)
		fmt.Fprintf(&b, "%s(%d, %d)", fn, int32(hi), int32(lo))
	}
	return b.String()
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
			ls.conn = cn
			ls.mu.Unlock()
			if _, err = cn.Listen(notifyChannel); err != nil {
				cn.Close()
			}
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			ls.mu.Lock()
			ls.live = cn
			ls.regs = ls.regs[:0]
			for _, set := range ls.watchers {
				for w := range set {
					w.cn = nil
					ls.regs = append(ls.regs, w)
				}
			}
			ls.unregs = nil
			ls.kickLocked()
			ls.mu.Unlock()
			for n := range ch {
				if id, err := strconv.ParseInt(n.Extra, 10, 64); err == nil {
					ls.wake(id)
				}
			}
		}
		ls.mu.Lock()
		ls.conn, ls.live = nil, nil
		for _, set := range ls.watchers {
			for w := range set {
				w.cn = nil
			}
		}
		ls.mu.Unlock()
		ls.wakeAll() // connection lost: waiters poll until it is back
		select {
		case <-ls.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// dsn is the connection string of the LISTEN connection: the client's
// settings, with its application_name, and a connect timeout unless the
// DSN has one, so that close never waits long on a connection attempt.
func (ls *listener) dsn() string {
	pc := ls.l.dsn.pq
	pc.ApplicationName = ls.l.appName
	if pc.ConnectTimeout == 0 {
		pc.ConnectTimeout = 10 * time.Second
	}
	return connString(pc)
}

func (ls *listener) close() {
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		return
	}
	ls.closed = true
	close(ls.stop)
	cn := ls.conn
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
	return l.listener.live != nil
}
