package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
)

// Waiting in the server.
//
// PostgreSQL's lock manager queues a conflicting advisory lock request
// (pg_advisory_lock) in arrival order and, on release, grants the lock
// directly to the first waiter; a new request that conflicts with a queued
// waiter's mode queues behind it, so pg_try_advisory_lock fails while
// waiters are queued (lock.c, LockAcquireExtended and its waitMask check;
// proc.c, ProcLockWakeup). That queue is this driver's wait queue:
//
//   - A waiting attempt (AcquireRequest.Wait) whose try finds the key held
//     starts pg_advisory_lock(key) on a waiter session of its own (a
//     dedicated connection, never one of the pool's lock sessions), and
//     returns driver.ErrLocked once the server shows the request (pg_locks),
//     so that waiters queue in the order of their attempts. On a key this
//     client found held lately, the attempt skips the try and queues at
//     once (queueAtOnce).
//   - When the server grants it, the key is kept for the owner: Watch wakes
//     the owner, and its next attempt turns it into its grant with no
//     statement. The waiter session then holds the key, as a lock session
//     would: Renew verifies it, Release unlocks on it (which grants the key
//     to the server's next waiter), and it then waits for the client's next
//     wait (idleWaiters are kept).
//   - The owner's attempts while it waits ask nothing of the server.
//   - A wait ends by Release(key, owner) (a Lock that gave up), or when
//     driver.QueueHold passes without an attempt of its owner: a request
//     still queued is cancelled (pg_cancel_backend from a lock session, in
//     the statement that finds the waiter session's request for that key
//     ungranted in pg_locks, its backend_start the session's), and a kept
//     key is unlocked, which grants it to the next waiter. The server may
//     grant the request between that read and the signal: the wait then
//     ends with 57014 holding the key, and the waiter session is cleared
//     (pg_advisory_unlock_all) like any ended wait.
//   - A wait whose session fails (pg_terminate_backend, a network cut) wakes
//     its owner, whose next attempt asks again, at the tail of the queue.
//   - lock_timeout (serverWaitFor, minutes) bounds each wait on the
//     server: the request is then made again, at the tail, while the owner
//     still asks. PostgreSQL may grant the lock and still raise the
//     timeout (or a cancel): the session is asked whether it holds the key
//     before anything is asked again, as a session lock outlives the failed
//     statement and a second request would stack it.
//
// At most MaxWaiters waiter sessions per client are in use at once
// (waiting, or holding the key they got); beyond, waiting attempts return
// driver.ErrLocked and their Locks poll.

// serverWaitFor is the lock_timeout of a waiter session: how long one
// pg_advisory_lock waits in the server before it is made again, at the
// tail of the queue. It is long so that a queue that takes long to drain
// keeps its order. The client waits for the reply that long plus the reply
// deadline (a server that stops answering); a network cut ends the wait
// sooner on both sides, as for a lock session: TCP keepalives and
// tcp_user_timeout on the server (and client_connection_check_interval,
// which ends a wait whose connection is gone) and on the sockets this
// driver dials.
const serverWaitFor = 5 * time.Minute

// keptFresh is how long after the server granted a kept key its waiter
// session is handed over with no statement; later, it is checked first.
const keptFresh = 100 * time.Millisecond

// waitTimeouts are statement_timeout and lock_timeout (ms) of a waiter
// session while it waits, or is idle; holdTimeouts while it holds the key
// it got: a lock session's.
func (c *config) waitTimeouts() (stmt, lock string) {
	return msString(c.serverWait + c.stmtTimeout), msString(c.serverWait)
}

func (c *config) holdTimeouts() (stmt, lock string) {
	return msString(c.stmtTimeout), msString(c.stmtTimeout)
}

func msString(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// idleWaiters is how many waiter sessions a client keeps, once they hold
// nothing, for its next waits.
const idleWaiters = 2

// The statements of waits: sqlWait, sqlHolds (does it hold the key whose
// pg_locks tag is $1, $2), sqlWaiterUnlock (its unlock statement) and
// sqlClear on a waiter session; sqlQueued and sqlEndWait on a lock session,
// about the waiter session $1's request for the key whose tag is $2, $3.
//
// A waiter session has two sets of timeouts: while it waits, or is idle,
// lock_timeout serverWait and statement_timeout longer; while it holds the
// key it got, a lock session's (its unlock, verification and fencing
// statements have the reply deadline of a lock session's). Each statement
// that changes what it holds sets them for the next, in the same round
// trip ($2 and $3, or $3 and $4): the wait as it is granted, the unlock
// and sqlClear as it goes idle.
//
// A waiter session holds at most the key it waited for, so its unlock
// also clears whatever else it may hold (pg_advisory_unlock_all: a stacked
// grant, say) before it waits for the client's next wait; CASE orders the
// calls.
const (
	sqlWait = `SELECT pg_backend_pid(), set_config('statement_timeout', $2, false), set_config('lock_timeout', $3, false)
		FROM pg_advisory_lock($1)`
	sqlWaiterUnlock = `SELECT CASE WHEN pg_advisory_unlock($1) THEN pg_advisory_unlock_all() IS NOT NULL
		AND set_config('statement_timeout', $2, false) IS NOT NULL AND set_config('lock_timeout', $3, false) IS NOT NULL
		ELSE false END, pg_backend_pid()`
	sqlClear = `SELECT pg_backend_pid(), set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false)
		FROM pg_advisory_unlock_all()`
	sqlQueued = `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory'
		AND classid = $2 AND objid = $3 AND objsubid = 1), pg_backend_pid()`
	sqlHolds = `SELECT h, pg_backend_pid(), CASE WHEN h THEN
			set_config('statement_timeout', $3, false) || set_config('lock_timeout', $4, false) END
		FROM (SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'
			AND classid = $1 AND objid = $2 AND objsubid = 1 AND granted) AS h) x`
	sqlEndWait = `SELECT count(pg_cancel_backend(l.pid)), pg_backend_pid() FROM pg_locks l
		JOIN pg_stat_activity a ON a.pid = l.pid AND ($4::timestamptz IS NULL OR a.backend_start = $4)
		WHERE l.pid = $1 AND l.locktype = 'advisory' AND l.classid = $2 AND l.objid = $3 AND l.objsubid = 1 AND NOT l.granted`
	// sqlEndWaits is sqlEndWait for several waits ($1 to $4: arrays of
	// their pids, backend starts, tags), sent by Close.
	sqlEndWaits = `SELECT count(pg_cancel_backend(l.pid))
		FROM unnest($1::int[], $2::text[], $3::oid[], $4::oid[]) AS w(pid, started, classid, objid)
		JOIN pg_locks l ON l.pid = w.pid AND l.locktype = 'advisory' AND l.classid = w.classid
			AND l.objid = w.objid AND l.objsubid = 1 AND NOT l.granted
		JOIN pg_stat_activity a ON a.pid = w.pid
			AND (w.started = '' OR a.backend_start = NULLIF(w.started, '')::timestamptz)`
)

// wait is one owner's wait in the server for a key.
type wait struct {
	h       *hold
	replied chan struct{} // closed when its first statement has a reply
	ended   chan struct{} // closed once no cancel of its request is in flight, after it ended
	timer   *time.Timer   // QueueHold after the owner's last attempt

	// Guarded by l.mu.
	s       *session // its waiter session; its slot is held until the key is kept
	sent    bool     // a statement was sent on s
	asking  bool     // a statement is in flight on s
	kept    bool     // the server granted the key on s
	keptAt  time.Time
	over    bool // ended: granted to the owner, given up, or Close
	lastTry time.Time
}

// A key a waiting attempt found held is most likely held at the next one
// too: a contended key passes from waiter to waiter. A waiting attempt on a
// key this locker found held within busyFor queues in the server at once
// (queueAtOnce), with no pg_try_advisory_lock first, so its request reaches
// the server one statement after the attempt began rather than two. Waiters
// then queue closer to the order of their attempts: where a statement ends,
// a backend flushes its statistics (at most once a second), which takes
// milliseconds when many backends flush at once, and the Locks that asked
// meanwhile on other backends would queue first. A key that turns out
// free is granted to the waiter session at once, and kept for the owner:
// the attempt returns it when the reply is in by the time its request is
// confirmed, else Watch wakes the owner for its next attempt.
const busyFor = 2 * time.Second

// maxBusy bounds the keys remembered as busy: beyond, a key found held is
// not remembered, and its next waiting attempt tries first. The lapsed
// ones are swept out at most once per busyFor.
const maxBusy = 1024

// waitAtOnceLocked reports whether a waiting attempt on key queues at once.
// The caller holds l.mu.
func (l *locker) waitAtOnceLocked(key string) bool {
	t, ok := l.busy[key]
	return ok && time.Since(t) < busyFor
}

// markBusy remembers that a waiting attempt found key held.
func (l *locker) markBusy(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if _, ok := l.busy[key]; !ok && len(l.busy) >= maxBusy {
		if now.Sub(l.busySwept) < busyFor {
			return
		}
		l.busySwept = now
		for k, t := range l.busy {
			if now.Sub(t) >= busyFor {
				delete(l.busy, k)
			}
		}
		if len(l.busy) >= maxBusy {
			return
		}
	}
	l.busy[key] = now
}

// queueAtOnce makes waiting attempt h, on a busy key, wait in the server
// with no try first. It reports done false, leaving h to the caller's try,
// when the wait cannot be had; otherwise it returns the attempt's outcome:
// the grant when the key is kept for the owner already, else
// driver.ErrLocked as a waiting attempt does.
func (l *locker) queueAtOnce(ctx context.Context, h *hold, req driver.AcquireRequest) (g driver.Grant, done bool, err error) {
	waiting, err := l.startWait(ctx, h)
	switch {
	case err != nil: // the wait, if it started, is over
		if !waiting {
			l.forget(h)
		}
		return driver.Grant{}, true, err
	case !waiting:
		return driver.Grant{}, false, nil
	}
	l.mu.Lock()
	if l.held[h.key] == h && h.w != nil && h.w.kept { // the key was free
		g, err := l.attemptWaiting(h, req) // unlocks mu
		return g, true, err
	}
	l.mu.Unlock()
	l.markBusy(h.key)
	return driver.Grant{}, true, fmt.Errorf("postgres: waiting in the server's queue: %w", driver.ErrLocked)
}

// startWait makes h, in flight and just refused by the server or on a busy
// key (queueAtOnce), wait in the server's queue. It reports false, leaving
// h to the caller, when the wait cannot be had (MaxWaiters waiter sessions
// in use, closing, no session), with an error when that is what the
// attempt should return: ctx ended, or a transaction-pooling proxy. Once it
// started, it returns an error only when ctx ended as the request was being
// queued, or the lock session that checks it found a transaction-pooling
// proxy; the wait is then ended.
func (l *locker) startWait(ctx context.Context, h *hold) (bool, error) {
	l.mu.Lock()
	if l.closed || l.waiters >= MaxWaiters || l.held[h.key] != h {
		l.mu.Unlock()
		return false, nil
	}
	l.waiters++
	l.mu.Unlock()
	s, reused, err := l.waiterSession(ctx)
	l.mu.Lock()
	if err != nil {
		l.waiters--
		l.mu.Unlock()
		switch {
		case ctx.Err() != nil:
			return false, fmt.Errorf("postgres: opening a waiter session: %w", ctx.Err())
		case isTxPooling(err):
			return false, err
		}
		return false, nil // the Lock polls
	}
	if l.closed || l.held[h.key] != h {
		l.mu.Unlock()
		l.recycleWaiter(s)
		return false, nil
	}
	w := &wait{h: h, s: s, lastTry: time.Now(), replied: make(chan struct{}), ended: make(chan struct{})}
	w.timer = time.AfterFunc(driver.QueueHold, func() { l.expire(h, w) })
	h.w = w
	l.wg.Add(1)
	l.mu.Unlock()
	s.sem <- struct{}{} // free: idle or new
	go l.waitInServer(w, reused)
	if err := l.confirmQueued(ctx, w); err != nil {
		l.mu.Lock()
		if h.w == w && !w.over {
			l.endWaitLocked(h, w) // unlocks mu
		} else {
			l.mu.Unlock()
		}
		return true, err
	}
	return true, nil
}

// confirmQueued returns once pg_locks shows w's request on the server
// (queued, or granted already), or its statement has had a reply, or after
// the reply deadline.
func (l *locker) confirmQueued(ctx context.Context, w *wait) error {
	classid, objid := LockTag(w.h.id)
	deadline := time.Now().Add(l.cfg.replyTimeout())
	for pause := 50 * time.Microsecond; time.Now().Before(deadline); pause = min(2*pause, 5*time.Millisecond) {
		time.Sleep(pause) // its statement reaches the server first, most often
		l.mu.Lock()
		s, sent := w.s, w.sent
		l.mu.Unlock()
		select {
		case <-w.replied:
			return nil
		default:
		}
		if !sent {
			continue
		}
		var queued bool
		err := l.ask(ctx, func(o *session) **sql.Stmt { return &o.queuedStmt }, sqlQueued,
			[]any{s.pid, int64(classid), int64(objid)}, &queued)
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("postgres: waiting in the server: %w", ctx.Err())
		case isTxPooling(err):
			return fmt.Errorf("postgres: checking the wait in the server: %w", err)
		case err != nil || queued:
			return nil
		}
	}
	return nil
}

// waitInServer runs w's pg_advisory_lock until the server grants the key,
// which it then keeps for w's owner, or the wait ends.
func (l *locker) waitInServer(w *wait, reused bool) {
	defer l.wg.Done()
	h := w.h
	for first := true; ; first = false {
		l.mu.Lock()
		s := w.s
		if w.over {
			l.mu.Unlock()
			l.waitEnded(w, s, nil)
			return
		}
		w.sent, w.asking = true, true
		l.mu.Unlock()
		err := l.serverWait(s, h.id)
		l.mu.Lock()
		w.asking = false
		l.mu.Unlock()
		if first {
			close(w.replied)
		}
		if err != nil && first && reused && connGone(err) {
			// An idle waiter session the server closed: once more, on a
			// new one.
			l.kill(s, err)
			s, err = l.openSession(background, true)
			if err == nil {
				s.sem <- struct{}{}
				l.mu.Lock()
				if l.closed {
					l.mu.Unlock()
					s.discard()
					return
				}
				w.s, w.sent = s, false
				l.wsess[s] = struct{}{}
				s.inUse = true
				l.waiters++
				l.mu.Unlock()
				continue
			}
			s = nil
		}
		if err != nil && s != nil && sessionSurvives(err) && !l.waitOver(w) {
			// The server may grant the lock and still raise the error
			// (lock_timeout, or a cancel, as the grant lands), and a session
			// lock outlives the failed statement: asking again would stack
			// it. The session says whether it holds the key.
			var held bool
			if herr := l.holdsKey(s, h.id, &held); herr != nil {
				err = herr
			} else if held {
				err = nil
			}
		}
		l.mu.Lock()
		switch {
		case w.over || l.closed:
			l.mu.Unlock()
			l.waitEnded(w, s, err)
			return
		case err == nil:
			w.kept, w.keptAt = true, time.Now()
			w.timer.Reset(driver.QueueHold) // the owner has that long to take it
			s.give()
			l.wakeLocked(watchKey{h.key, h.owner})
			l.mu.Unlock()
			return
		case isLockTimeout(err), isCancelled(err):
			// lock_timeout, or a cancel from outside (an operator's): the
			// session is fine; ask again, at the tail.
			l.mu.Unlock()
			continue
		}
		// The session failed, or the server refused the wait: the owner is
		// woken. Its next attempt asks again, but for a refusal (or a
		// transaction-pooling proxy), which it gets as its error.
		w.over = true
		w.timer.Stop()
		h.w = nil
		if l.held[h.key] == h {
			delete(l.held, h.key)
		}
		refused := s != nil && sessionSurvives(err)
		if refused || isTxPooling(err) {
			kind := errTxPooling
			if !isTxPooling(err) {
				kind = failureKind(err)
			}
			l.failed[watchKey{h.key, h.owner}] = fmt.Errorf("postgres: waiting in the server: %w: %w", err, kind)
		}
		l.wakeLocked(watchKey{h.key, h.owner})
		l.mu.Unlock()
		switch {
		case refused:
			if cerr := l.clear(s); cerr != nil {
				s.give()
				l.kill(s, cerr)
				return
			}
			s.give()
			l.recycleWaiter(s)
		case s != nil:
			l.kill(s, err)
		}
		return
	}
}

// failedWaitLocked returns, and forgets, the error of owner's wait for key that
// the server refused (see waitInServer). The caller holds l.mu.
func (l *locker) failedWaitLocked(key string, owner driver.Owner) error {
	k := watchKey{key, owner}
	err := l.failed[k]
	delete(l.failed, k)
	return err
}

// isCancelled reports SQLSTATE 57014, query_canceled.
func isCancelled(err error) bool { return sqlState(err) == "57014" }

// serverWait runs pg_advisory_lock on s, whose slot the caller holds,
// within lock_timeout plus the reply deadline.
func (l *locker) serverWait(s *session, id int64) error {
	var pid int
	err := txPoolingErr(s.exchangeWithin(l.cfg.serverWait+l.cfg.replyTimeout(), func() error {
		stmt, lock := l.cfg.holdTimeouts()
		var a, b string
		return s.waitStmt.QueryRowContext(background, id, stmt, lock).Scan(&pid, &a, &b)
	}))
	if err == nil {
		err = s.checkPID(pid, true)
	}
	return err
}

// waitOver reports whether w ended, or its client closed.
func (l *locker) waitOver(w *wait) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return w.over || l.closed
}

// holdsKey asks waiter session s, whose slot the caller holds, whether it
// holds the key id.
func (l *locker) holdsKey(s *session, id int64, held *bool) error {
	classid, objid := LockTag(id)
	var pid int
	stmt, lock := l.cfg.holdTimeouts()
	var set sql.NullString
	err := s.prepared(&s.holdsStmt, sqlHolds, []any{int64(classid), int64(objid), stmt, lock}, held, &pid, &set)
	if err == nil {
		err = s.checkPID(pid, true)
	}
	return err
}

// isLockTimeout reports SQLSTATE 55P03, lock_not_available.
func isLockTimeout(err error) bool { return sqlState(err) == "55P03" }

// waitEnded cleans s up after w ended (its statement returned err, or was
// not sent): once no cancel of it is in flight, whatever it may have been
// granted is unlocked, and s kept for the next wait.
func (l *locker) waitEnded(w *wait, s *session, err error) {
	if s == nil {
		return
	}
	<-w.ended
	l.mu.Lock()
	sent, closed := w.sent, l.closed
	l.mu.Unlock()
	if closed { // Close discards s
		s.give()
		return
	}
	if sent && (err == nil || sessionSurvives(err)) {
		// Granted, or cancelled (perhaps after the grant): a session lock
		// outlives a failed statement.
		err = l.clear(s)
	}
	s.give()
	if err != nil && !errors.Is(err, errNoReply) {
		l.kill(s, err)
		return
	}
	l.recycleWaiter(s)
}

// clear frees whatever waiter session s, whose slot the caller holds, may
// hold.
func (l *locker) clear(s *session) error {
	var pid int
	stmt, lock := l.cfg.waitTimeouts()
	var a, b string
	err := s.prepared(&s.clearStmt, sqlClear, []any{stmt, lock}, &pid, &a, &b)
	if err == nil {
		err = s.checkPID(pid, true)
	}
	return err
}

// attemptWaiting is an attempt of h's owner while it waits in the server:
// nothing is asked of the server unless the key is kept for the owner and
// a fencing token is asked for. The caller holds l.mu; it is unlocked.
func (l *locker) attemptWaiting(h *hold, req driver.AcquireRequest) (driver.Grant, error) {
	w := h.w
	w.lastTry = time.Now()
	if !w.kept {
		l.mu.Unlock()
		return driver.Grant{}, fmt.Errorf("postgres: waiting in the server's queue: %w", driver.ErrLocked)
	}
	s := w.s
	w.over = true
	w.timer.Stop()
	close(w.ended)
	h.w = nil
	if !s.dead && time.Since(w.keptAt) > keptFresh {
		// The session was last heard from as the server granted the key:
		// check it is alive (and its backend the same) before handing the
		// key over. Its slot is free once the key is kept.
		l.mu.Unlock()
		select {
		case s.sem <- struct{}{}:
			err := s.beat()
			s.give()
			if err != nil {
				l.kill(s, err)
			}
		case <-s.stop:
		}
		l.mu.Lock()
	}
	if s.dead || l.closed { // its session ended: the server freed the key
		if l.held[h.key] == h {
			delete(l.held, h.key)
		}
		l.mu.Unlock()
		return driver.Grant{}, fmt.Errorf("postgres: the waiter session ended as the key was kept: %w", driver.ErrLocked)
	}
	h.s, h.onLost = s, req.OnLost
	s.keys[h.key] = h
	l.mu.Unlock()
	if !req.Fencing {
		return driver.Grant{}, nil
	}
	token, err := l.fenceKept(s, h, req)
	if err != nil {
		// Not granted: the key goes to the server's next waiter, as a
		// try gives back a key whose fencing statement failed, and the
		// owner's next attempt asks again.
		l.release(h)
		return driver.Grant{}, err
	}
	return driver.Grant{Token: token}, nil
}

// fenceKept issues the fencing token of a kept key on s, which holds it.
func (l *locker) fenceKept(s *session, h *hold, req driver.AcquireRequest) (uint64, error) {
	select {
	case s.sem <- struct{}{}:
	case <-s.stop:
		return 0, l.ended(s)
	}
	defer s.give()
	err := l.ensureFenceTable(s)
	var ok bool
	var pid int
	var tok sql.NullInt64
	if err == nil {
		err = s.fenced(true, h.id, req.Holder, &ok, &pid, &tok)
	}
	if err == nil {
		err = s.checkPID(pid, true)
	}
	if err == nil && tok.Int64 == 0 {
		err = errors.New("postgres: the fencing statement returned no token")
	}
	if err != nil {
		if !sessionSurvives(err) || isTxPooling(err) {
			l.kill(s, err)
		}
		return 0, fmt.Errorf("postgres: acquire: fencing token: %w: %w", err, failureKind(err))
	}
	l.mu.Lock()
	h.token = uint64(tok.Int64)
	l.mu.Unlock()
	return h.token, nil
}

// expire ends w when its owner has made no attempt for QueueHold (and the
// key was not kept for it for as long).
func (l *locker) expire(h *hold, w *wait) {
	l.mu.Lock()
	if w.over || l.closed || h.w != w {
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

// endWaitLocked ends h's wait: a kept key is unlocked, which grants it to
// the server's next waiter; a request still in the server is cancelled.
// Both go on in the background. The caller holds l.mu; it is unlocked.
func (l *locker) endWaitLocked(h *hold, w *wait) {
	w.over = true
	w.timer.Stop()
	h.w = nil
	if l.held[h.key] == h {
		delete(l.held, h.key)
	}
	s, kept, sent := w.s, w.kept, w.sent
	if sent && !kept {
		l.ending[w] = struct{}{} // Close cancels it too, if it comes first
	}
	l.wakeLocked(watchKey{h.key, h.owner})
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		if kept {
			close(w.ended)
			select {
			case s.sem <- struct{}{}: // free once kept
				l.waitEnded(w, s, nil)
			case <-s.stop: // killed, or Close: which frees the key
			}
			return
		}
		if sent {
			l.cancelWait(w, s)
			l.mu.Lock()
			delete(l.ending, w)
			l.mu.Unlock()
		}
		close(w.ended) // waitInServer cleans up
	}()
}

// cancelWait cancels s's request for w's key while pg_locks shows it
// waiting, until its statement in flight has a reply or the reply deadline
// passes. A grant that lands between the read and the signal ends the wait
// with 57014, the key held; waitEnded clears it.
func (l *locker) cancelWait(w *wait, s *session) {
	classid, objid := LockTag(w.h.id)
	ctx, cancel := context.WithTimeout(background, l.cfg.replyTimeout())
	defer cancel()
	go func() { // Close takes over: it cancels the waits still ending
		select {
		case <-l.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	for pause := 100 * time.Microsecond; ctx.Err() == nil; pause = min(2*pause, 10*time.Millisecond) {
		var n int
		err := l.ask(ctx, func(o *session) **sql.Stmt { return &o.endStmt }, sqlEndWait,
			[]any{s.pid, int64(classid), int64(objid), s.started}, &n)
		if err != nil || n > 0 {
			return
		}
		l.mu.Lock()
		asking := w.asking
		l.mu.Unlock()
		if !asking { // its statement has had its reply
			return
		}
		select { // not waiting yet
		case <-s.stop:
			return
		case <-time.After(pause):
		}
	}
}

// cancelWaits cancels the requests of waits in the server, on free (whose
// slot the caller holds) or, if nil, on a new connection of the pool,
// within the reply deadline.
func (l *locker) cancelWaits(free *session, waits []*wait) {
	var pids []int64
	var started []string
	var classids, objids []int64
	for _, w := range waits {
		classid, objid := LockTag(w.h.id)
		pids = append(pids, int64(w.s.pid))
		t := ""
		if w.s.started.Valid {
			t = w.s.started.Time.Format(time.RFC3339Nano)
		}
		started = append(started, t)
		classids, objids = append(classids, int64(classid)), append(objids, int64(objid))
	}
	args := []any{pq.Array(pids), pq.Array(started), pq.Array(classids), pq.Array(objids)}
	if free != nil {
		var n int
		free.queryRow(sqlEndWaits, args, &n)
		free.give()
		return
	}
	ctx, cancel := context.WithTimeout(background, l.cfg.replyTimeout())
	l.db.ExecContext(ctx, sqlEndWaits, args...)
	cancel()
}

// firstFree takes the slot of the first of ss to be free within d, and
// returns it, or nil.
func firstFree(ss []*session, d time.Duration) *session {
	if len(ss) == 0 {
		return nil
	}
	got := make(chan *session, len(ss))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() {
			select {
			case s.sem <- struct{}{}:
				got <- s
			case <-stop:
			}
		})
	}
	t := time.NewTimer(d)
	defer t.Stop()
	var first *session
	select {
	case first = <-got:
	case <-t.C:
	}
	close(stop)
	wg.Wait()
	close(got)
	for s := range got {
		if s != first {
			s.give()
		}
	}
	return first
}

// waiterSession takes an idle waiter session or opens one.
func (l *locker) waiterSession(ctx context.Context) (s *session, reused bool, err error) {
	l.mu.Lock()
	if n := len(l.idle); n > 0 {
		s = l.idle[n-1]
		l.idle = l.idle[:n-1]
		s.inUse = true
		l.mu.Unlock()
		return s, true, nil
	}
	l.mu.Unlock()
	s, err = l.openSession(ctx, true)
	if err != nil {
		return nil, false, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		s.discard()
		return nil, false, errClosedLock
	}
	l.wsess[s] = struct{}{}
	s.inUse = true
	l.mu.Unlock()
	return s, false, nil
}

// recycleWaiter keeps a waiter session that holds nothing for the next
// wait, or closes it.
func (l *locker) recycleWaiter(s *session) {
	l.mu.Lock()
	if l.closed || s.dead {
		l.mu.Unlock()
		return // Close or kill discards it
	}
	s.inUse = false
	l.waiters--
	if len(l.idle) >= idleWaiters {
		l.mu.Unlock()
		l.kill(s, nil)
		return
	}
	l.idle = append(l.idle, s)
	l.mu.Unlock()
}
