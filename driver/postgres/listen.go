package postgres

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
)

// broadcastChannel is the NOTIFY channel every client also listens on:
// SQL that releases a key may wake its waiters with
// pg_notify('mutexkit', '<key id>').
const broadcastChannel = "mutexkit"

// Wake-ups: each client listens on a channel of its own,
// "mutexkit_<random>", on one connection. A waiting attempt records the
// channel in its queue row, and a release notifies the first live waiter
// alone, on its client's channel, with its owner as the payload (see
// QueueTable): one release wakes one waiter. The NOTIFY goes out when the
// release's statement commits, after the unlock.

// listener is a client's one LISTEN connection, started by the first Watch
// and stopped by Close. It wakes the waiter a notification names, and
// every waiter when it fails, since notifications may go unheard until it
// is back.
type listener struct {
	l       *locker
	channel string // this client's own
	stop    chan struct{}

	mu      sync.Mutex
	started bool
	closed  bool
	conn    *pq.ListenerConn // being opened or open, for close
	live    bool             // LISTENing on conn
	gen     uint64           // counts the connections that took effect
}

func newListener(l *locker) *listener {
	var b [8]byte
	rand.Read(b[:])
	return &listener{
		l:       l,
		channel: broadcastChannel + "_" + hex.EncodeToString(b[:]),
		stop:    make(chan struct{}),
	}
}

// Watch registers wake for owner's wake-ups: when a release finds owner
// first in key's queue, or the LISTEN connection fails. A
// wake-up that came since owner's last attempt wakes it at once. Clients
// made by FromDB without WithListenDSN have no LISTEN connection and
// return driver.ErrUnimplemented: package mutex then polls.
func (l *locker) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	if l.listener == nil {
		return nil, fmt.Errorf("postgres: no LISTEN connection (FromDB without WithListenDSN): %w", driver.ErrUnimplemented)
	}
	if err := l.listener.start(); err != nil {
		return nil, err
	}
	return l.waits.watch(owner, KeyID(l.cfg.namespace, key), wake), nil
}

func (ls *listener) start() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		return errClosedLock
	}
	if !ls.started {
		ls.started = true
		ls.l.wg.Add(1)
		go ls.run()
	}
	return nil
}

// generation is the LISTEN connection's generation while it is up, else 0.
// Notifications sent after it was read reach this client while it stays
// the same.
func (l *locker) listenerGen() uint64 {
	if l.listener == nil {
		return 0
	}
	ls := l.listener
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if !ls.live {
		return 0
	}
	return ls.gen
}

// channelArg is the channel a waiting attempt records: NULL without a
// LISTEN connection (its waiters poll).
func (l *locker) channelArg() any {
	if l.listener == nil {
		return nil
	}
	return l.listener.channel
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
			err = ls.listen(cn)
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			ls.mu.Lock()
			ls.live = true
			ls.gen++
			ls.mu.Unlock()
			// Waiters whose last statement was sent before now are not
			// answered from it (their generation differs): their next
			// attempt asks the server. The heads among them were told by
			// listen.
			for n := range ch {
				ls.dispatch(n)
			}
		}
		ls.mu.Lock()
		ls.conn, ls.live = nil, false
		ls.mu.Unlock()
		ls.l.waits.wakeAll() // connection lost: waiters ask the server until it is back
		select {
		case <-ls.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// listen LISTENs on both channels and then notifies, on this client's
// channel, those of its waiters that are first in line: a release may have
// notified them before the LISTEN took effect. Within the reply deadline:
// a server that stops answering has the connection closed.
func (ls *listener) listen(cn *pq.ListenerConn) error {
	t := time.AfterFunc(ls.l.cfg.replyTimeout(), func() { cn.Close() })
	defer t.Stop()
	for _, c := range []string{ls.channel, broadcastChannel} {
		if _, err := cn.Listen(c); err != nil {
			cn.Close()
			return err
		}
	}
	if ls.l.queueMode() == queuePresent {
		// An error the server reports (the table was dropped) leaves the
		// connection usable.
		if done, err := cn.ExecSimpleQuery(strings.ReplaceAll(sqlHeads, "$1", "'"+ls.channel+"'")); !done {
			cn.Close()
			return err
		}
	}
	return nil
}

// sqlHeads notifies the waiters of channel $1 that are first in line.
const sqlHeads = `SELECT pg_notify(q.channel, q.owner::text) FROM ` + QueueTable + ` q
	WHERE q.channel = $1 AND q.deadline > now() AND NOT EXISTS (SELECT 1 FROM ` + QueueTable + ` p
		WHERE p.key_id = q.key_id AND p.deadline > now() AND p.arrival < q.arrival)`

// dispatch wakes whom a notification names.
func (ls *listener) dispatch(n *pq.Notification) {
	switch n.Channel {
	case ls.channel:
		if o, ok := parseOwner(n.Extra); ok {
			ls.l.waits.wake(o)
		}
	case broadcastChannel:
		if id, err := strconv.ParseInt(n.Extra, 10, 64); err == nil {
			ls.l.waits.wakeKey(id)
		}
	}
}

// parseOwner reads an owner as the server writes a uuid.
func parseOwner(s string) (driver.Owner, bool) {
	var o driver.Owner
	s = strings.ReplaceAll(s, "-", "")
	if len(s) != 2*len(o) {
		return o, false
	}
	_, err := hex.Decode(o[:], []byte(s))
	return o, err == nil
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
	ls.mu.Unlock()
	if cn != nil {
		cn.Close() // closes ch, so run returns
	}
}

// listenerUp reports whether the LISTEN connection is up (for tests).
func (l *locker) listenerUp() bool { return l.listenerGen() != 0 }
