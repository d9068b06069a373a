package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Waiting in the server (WithServerWait, on by default).
//
// MySQL and MariaDB queue GET_LOCK's waiters in the server, in arrival
// order, and a release grants the lock to the first of them at once. A
// waiting attempt (AcquireRequest.Wait) that finds the key held starts a
// wait: GET_LOCK(name, waitFor) on a waiter session of its own, in
// a goroutine, and returns driver.ErrLocked. The owner's later attempts
// cost nothing on the server: they find the wait still going
// (driver.ErrLocked) or the key granted to its session, "kept" for the
// owner, which they turn into the owner's grant. Watch wakes the owner
// when its key is kept. A wait ends:
//
//   - when its owner's attempt takes the kept key;
//   - by Release(key, owner) (a Lock that gave up), or when QueueHold
//     passes without an attempt of its owner (its process died): a wait
//     still in the server is cancelled by closing its session (the server
//     drops a waiter whose connection closed), and a kept key is released,
//     which grants it to the server's next waiter;
//   - when the session fails: the owner is woken, and its next attempt
//     starts a new wait, at the tail of the queue.
//
// A GET_LOCK that times out on the server (config.waitFor) is asked
// again, at the tail of the queue. A waiter frozen or cut off by the
// network when the server grants it the key holds it until the server's
// wait_timeout ends the session: waitidle.go keeps that short.

// serverWaitFor is the timeout of one GET_LOCK wait in the server, unless
// go-sql-driver's readTimeout is shorter (config.waitFor).
const serverWaitFor = 30 * time.Second

// idleWaiters is how many waiter sessions a client keeps for its next
// waits once they hold nothing.
const idleWaiters = 2

const sqlWait = `SELECT GET_LOCK(?, ?), CONNECTION_ID()`

// wait is one owner's wait in the server for a key.
type wait struct {
	h       *hold
	ctx     context.Context // its GET_LOCK's: cancel closes the session
	cancel  context.CancelFunc
	replied chan struct{} // closed when its first GET_LOCK has a reply
	timer   *time.Timer   // QueueHold after the owner's last attempt

	// Guarded by l.mu.
	s       *session // the waiter session, once the key is kept on it
	kept    bool
	ended   bool
	lastTry time.Time
}

type watchKey struct {
	key   string
	owner driver.Owner
}

type watchReg struct{ c chan<- struct{} }

// stopLocked ends w's bookkeeping. The caller holds l.mu.
func (w *wait) stopLocked() {
	w.ended = true
	w.timer.Stop()
}

// startWait makes h, in flight and just refused by the server, wait in the
// server. It reports false when it cannot (server waits off, the cap of
// WithMaxWaiters reached, closing): the caller then forgets h.
func (l *locker) startWait(ctx context.Context, h *hold) bool {
	l.mu.Lock()
	if !l.cfg.serverWait || l.closed || l.waiters >= l.cfg.maxWaiters || l.held[h.key] != h {
		l.mu.Unlock()
		return false
	}
	l.waiters++
	l.mu.Unlock()
	// The session is taken here, before the attempt returns, and the
	// attempt returns once its GET_LOCK is on its way: the server queues
	// waiters in the order their statements reach it, and the next waiter's
	// attempt (a round trip of its own first) comes after.
	s, reused, err := l.waiterSession(ctx)
	l.mu.Lock()
	if err != nil || l.closed || l.held[h.key] != h {
		l.waiters--
		l.mu.Unlock()
		if err == nil {
			s.discard()
		}
		return false
	}
	wctx, cancel := context.WithCancel(background)
	w := &wait{h: h, ctx: wctx, cancel: cancel, lastTry: time.Now(), replied: make(chan struct{})}
	w.timer = time.AfterFunc(driver.QueueHold, func() { l.expire(h, w) })
	h.w = w
	l.wg.Add(1)
	l.mu.Unlock()
	sending := make(chan struct{})
	go l.waitInServer(h, w, s, reused, sending)
	<-sending
	l.confirmQueued(ctx, w, s.id)
	return true
}

// sqlQueued finds a connection waiting in GET_LOCK (MariaDB's state, and
// MySQL 8's).
const sqlQueued = `SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND STATE IN ('User lock', 'Waiting for user lock')`

// confirmQueued returns once the server shows connection id waiting in
// GET_LOCK, or its wait has had a reply, or after the reply deadline, or
// when ctx ends: the attempt that started the wait then returns, so that
// waiters queue in the order of their attempts. It asks on a connection
// of the pool, not a lock session: a reply past the deadline would close
// the session, freeing its locks.
func (l *locker) confirmQueued(ctx context.Context, w *wait, id int64) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.replyTimeout())
	defer cancel()
	for pause := 100 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		select {
		case <-w.replied:
			return
		default:
		}
		var n int
		if err := l.db.QueryRowContext(ctx, sqlQueued, id).Scan(&n); err != nil || n > 0 {
			return
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return
		}
	}
}

// waitInServer runs w's GET_LOCK on s until the server grants the key,
// which it then keeps for w's owner, or the wait ends. It closes sending
// as it sends the first statement.
func (l *locker) waitInServer(h *hold, w *wait, s *session, reused bool, sending chan struct{}) {
	defer l.wg.Done()
	var err error
	for err == nil {
		var got bool
		got, err = l.serverWait(s, w, h.name, sending)
		if sending != nil {
			close(w.replied)
			sending = nil
		}
		if err != nil && reused && connGone(err) && w.ctx.Err() == nil {
			// An idle waiter session the server closed (wait_timeout): once
			// more, on a new one.
			s.discard()
			reused = false
			s, err = l.openSession(w.ctx, true)
			continue
		}
		if err != nil {
			break
		}
		l.mu.Lock()
		if w.ended || l.closed {
			l.mu.Unlock()
			s.discard() // frees the lock if the server granted it just before
			return
		}
		if got {
			w.kept, w.s = true, s
			w.timer.Reset(driver.QueueHold)
			l.wakeLocked(watchKey{h.key, h.owner})
			if l.cfg.idleTimeout > waiterIdle {
				l.wg.Add(1)
				go l.raiseIdle(s, h)
			}
			l.mu.Unlock()
			return
		}
		l.mu.Unlock() // the server's timeout: ask again
	}
	if s != nil {
		s.discard()
	}
	l.mu.Lock()
	if !w.ended && !l.closed && h.w == w {
		// The owner's next attempt asks the server again (and may wait
		// again, at the tail): wake it for that.
		w.stopLocked()
		h.w = nil
		l.waiters--
		if l.held[h.key] == h {
			delete(l.held, h.key)
		}
		l.wakeLocked(watchKey{h.key, h.owner})
	}
	l.mu.Unlock()
}

// serverWait runs GET_LOCK(name, waitFor) on s, until w's context
// ends (which closes s) or the reply deadline. It holds s's slot while it
// waits, as every statement on a session does: a heartbeat's check that
// still aims at s (a grant released on it, s recycled for this wait) then
// waits for its own deadline instead of queueing a statement behind
// GET_LOCK on the connection, missing its reply deadline and killing s.
func (l *locker) serverWait(s *session, w *wait, name string, sending chan struct{}) (bool, error) {
	select {
	case s.sem <- struct{}{}:
	case <-w.ctx.Done():
		if sending != nil {
			close(sending)
		}
		return false, w.ctx.Err()
	}
	defer s.give()
	ctx, cancel := context.WithTimeout(w.ctx, l.cfg.waitFor+l.cfg.replyTimeout())
	defer cancel()
	var got sql.NullInt64
	var id int64
	if sending != nil {
		close(sending) // confirmQueued then watches for the wait on the server
	}
	if s.waitStmt == nil {
		st, err := s.prepare(sqlWait)
		if err != nil {
			return false, err
		}
		s.waitStmt = st
	}
	err := s.waitStmt.QueryRowContext(ctx, name, int64(l.cfg.waitFor/time.Second)).Scan(&got, &id)
	switch {
	case err != nil:
		return false, err
	case id != s.id:
		return false, s.switched(id)
	case !got.Valid:
		return false, errors.New("GET_LOCK returned NULL (the statement was killed?)")
	}
	return got.Int64 == 1, nil
}

// waiterSession takes an idle waiter session or opens one.
func (l *locker) waiterSession(ctx context.Context) (s *session, reused bool, err error) {
	var stale []*session // the server has ended them, or is about to (waiterIdle)
	defer func() {
		for _, x := range stale {
			x.discard()
		}
	}()
	l.mu.Lock()
	for n := len(l.idle); n > 0; n-- {
		s = l.idle[n-1]
		l.idle = l.idle[:n-1]
		if time.Since(s.idleSince) < waiterIdle-time.Second {
			l.mu.Unlock()
			return s, true, nil
		}
		stale = append(stale, s)
	}
	l.mu.Unlock()
	s, err = l.openSession(ctx, true)
	return s, false, err
}

// recycleWaiter keeps a waiter session that holds nothing for the next
// wait, or discards it.
func (l *locker) recycleWaiter(s *session) {
	l.mu.Lock()
	if l.closed || s.dead || s.raised || len(l.idle) >= idleWaiters {
		l.mu.Unlock()
		s.discard()
		return
	}
	s.keys = make(map[string]*hold)
	s.idleSince = time.Now()
	l.idle = append(l.idle, s)
	l.mu.Unlock()
}

// attemptWaiting is an attempt of h's owner while it waits in the server:
// nothing is asked of the server. If the key is kept for the owner it
// becomes the owner's grant. The caller holds l.mu; it is unlocked.
func (l *locker) attemptWaiting(h *hold, req driver.AcquireRequest) (driver.Grant, error) {
	w := h.w
	w.lastTry = time.Now()
	if !w.kept {
		l.mu.Unlock()
		return driver.Grant{}, fmt.Errorf("mysql: waiting in the server: %w", driver.ErrLocked)
	}
	s := w.s
	w.stopLocked()
	h.w = nil
	h.since = req.Holder.Since
	h.onLost = req.OnLost
	l.waiters--
	l.mu.Unlock()
	if err := l.granted(s, h, req); err != nil {
		s.discard() // frees the lock, if it still holds it
		return driver.Grant{}, err
	}
	return driver.Grant{Token: h.token}, nil
}

// expire ends w when its owner has made no attempt for QueueHold (and the
// key was not kept for it for as long).
func (l *locker) expire(h *hold, w *wait) {
	l.mu.Lock()
	if w.ended || l.closed || h.w != w {
		l.mu.Unlock()
		return
	}
	if rest := driver.QueueHold - time.Since(w.lastTry); rest > 0 && !w.kept {
		w.timer.Reset(rest)
		l.mu.Unlock()
		return
	}
	l.endWaitLocked(h, w)
}

// endWaitLocked ends h's wait: a kept key is released in the background,
// which grants it to the server's next waiter; a wait still in the server
// is cancelled. The caller holds l.mu; it is unlocked.
func (l *locker) endWaitLocked(h *hold, w *wait) {
	w.stopLocked()
	h.w = nil
	l.waiters--
	if l.held[h.key] == h {
		delete(l.held, h.key)
	}
	if !w.kept {
		l.mu.Unlock()
		w.cancel() // closes the session: the server drops the waiter
		return
	}
	s := w.s
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		var ok bool
		err := l.onThis(s, func() error {
			var err error
			ok, err = l.unlockOnce(s, h)
			return err
		})
		if err != nil || !ok {
			s.discard() // frees it all the same
			return
		}
		l.recycleWaiter(s)
	}()
}

// wakeLocked wakes the watches of k. The caller holds l.mu.
func (l *locker) wakeLocked(k watchKey) {
	for r := range l.watches[k] {
		select {
		case r.c <- struct{}{}:
		default:
		}
	}
}

// Watch wakes owner when key is kept for it: only an owner that waits in
// the server (an attempt with Wait found the key held) can be woken, once
// per grant, so one release wakes one waiter. For any other owner, and
// with WithServerWait(false), it returns driver.ErrUnimplemented: this
// driver sees another client's release only by waiting in the server.
func (l *locker) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	if !l.cfg.serverWait {
		return nil, fmt.Errorf("mysql: waiters poll (WithServerWait(false)): %w", driver.ErrUnimplemented)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosedLocker
	}
	h := l.held[key]
	if h == nil || h.owner != owner || h.w == nil {
		return nil, fmt.Errorf("mysql: only an owner waiting in the server can be woken: %w", driver.ErrUnimplemented)
	}
	k := watchKey{key, owner}
	r := &watchReg{c: wake}
	if l.watches[k] == nil {
		l.watches[k] = make(map[*watchReg]struct{})
	}
	l.watches[k][r] = struct{}{}
	if h.w.kept {
		l.wakeLocked(k)
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.watches[k], r)
		if len(l.watches[k]) == 0 {
			delete(l.watches, k)
		}
	}, nil
}
