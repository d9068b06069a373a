package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// locker is one client's Locker: up to MaxSessions lock sessions its held
// keys share, the keys it holds (each pinned to the session it was taken
// on), and its waiters in the server (wait.go).
type locker struct {
	cfg      config
	db       *sql.DB
	ownDB    bool   // opened by this driver: closed with the locker
	password string // removed from every error
	host     string
	procPID  int
	epoch    time.Time
	fenceMu  sync.Mutex
	fenceOK  bool // the fencing table exists
	closing  chan struct{}

	mu       sync.Mutex
	closed   bool
	sessions []*session
	creating int
	changed  chan struct{} // closed and replaced when sessions change
	rr       int
	held     map[string]*hold // key -> grant, attempt in flight, or wait
	waiters  int              // waits in the server
	idle     []*session       // waiter sessions holding nothing, for the next wait
	watches  map[watchKey]map[*watchReg]struct{}

	wg sync.WaitGroup // waits, background releases, checks
}

// hold is one key taken, being taken, or waited for by this locker.
type hold struct {
	key    string
	name   string // LockName: never in an error
	owner  driver.Owner
	s      *session // the session holding it; nil while in flight or waiting
	token  uint64
	since  time.Time
	onLost func(error)
	w      *wait // set while owner waits in the server, or the key is kept for it
}

func newLocker(cfg config, db *sql.DB, ownDB bool, password string) *locker {
	host, _ := os.Hostname()
	return &locker{
		cfg:      cfg,
		db:       db,
		ownDB:    ownDB,
		password: password,
		host:     host,
		procPID:  os.Getpid(),
		epoch:    time.Now(),
		closing:  make(chan struct{}),
		changed:  make(chan struct{}),
		held:     make(map[string]*hold),
		watches:  make(map[watchKey]map[*watchReg]struct{}),
	}
}

func (l *locker) name(key string) string { return LockName(l.cfg.namespace, key) }

// connectError adds what an operator needs to a failure to open or set up
// a session, with the password removed.
func (l *locker) connectError(err error) error {
	if errors.Is(err, ErrReadOnly) || errors.Is(err, ErrMultiplexing) {
		return err
	}
	if badSetting(err) {
		return redactErr(fmt.Errorf("mysql: connect: the server refused a setting of the DSN (go-sql-driver sends a parameter it does not know as SET): %w: %w", err, driver.ErrInvalid), l.password)
	}
	return redactErr(fmt.Errorf("mysql: connect: %w: %w", err, failureKind(err)), l.password)
}

// start opens the first session, so that Connect reports a refused
// password, an unreachable server or a read-only one at once.
func (l *locker) start(ctx context.Context) error {
	s, err := l.openSession(ctx, false)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.addSessionLocked(s)
	l.mu.Unlock()
	return nil
}

// Acquire makes one GET_LOCK(name, 0) attempt on a lock session, and takes
// the fencing token after it when req.Fencing is set. A key this locker
// holds, takes or waits for is never asked for again: the server would
// grant it again to the same session, stacked. With req.Wait, an attempt
// that finds the key held starts a wait in the server (wait.go) and
// returns ErrLocked; the owner's later attempts find the key kept for it.
//
// One exception to the queue contract: an owner whose key another owner of
// this locker holds or waits for gets ErrLocked with no place in the
// server's queue (and Watch refuses it), as one record per key is kept.
// Package mutex never asks so: it queues one client's Mutex values on a key
// itself and sends one at a time to the driver.
func (l *locker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	if err := ctx.Err(); err != nil {
		return driver.Grant{}, err
	}
	h := &hold{key: req.Key, name: l.name(req.Key), owner: req.Owner, onLost: req.OnLost, since: req.Holder.Since}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return driver.Grant{}, errClosedLocker
	}
	if cur := l.held[req.Key]; cur != nil {
		if cur.owner != req.Owner {
			l.mu.Unlock()
			return driver.Grant{}, fmt.Errorf("mysql: key held by another owner of this client: %w", driver.ErrLocked)
		}
		if cur.s != nil {
			l.mu.Unlock()
			return driver.Grant{Token: cur.token}, nil // a retry finds its own grant
		}
		if cur.w != nil {
			return l.attemptWaiting(cur, req) // unlocks l.mu
		}
		l.mu.Unlock()
		return driver.Grant{}, fmt.Errorf("mysql: an attempt of this owner is in flight: %w", driver.ErrLocked)
	}
	l.held[req.Key] = h
	l.mu.Unlock()

	var s *session
	var ok bool
	err := l.onSession(ctx, func(on *session) error {
		var err error
		s = on
		ok, err = l.tryLock(s, h)
		return err
	})
	if err != nil {
		l.forget(h)
		return driver.Grant{}, err
	}
	if !ok {
		if req.Wait && l.startWait(ctx, h) {
			return driver.Grant{}, fmt.Errorf("mysql: waiting in the server: %w", driver.ErrLocked)
		}
		l.forget(h)
		return driver.Grant{}, fmt.Errorf("mysql: %w", driver.ErrLocked)
	}
	if err := l.granted(s, h, req); err != nil {
		return driver.Grant{}, err
	}
	return driver.Grant{Token: h.token}, nil
}

// granted records that s took h's lock and, if asked, takes its fencing
// token on s. On an error nothing is held for h.
func (l *locker) granted(s *session, h *hold, req driver.AcquireRequest) error {
	if req.Fencing {
		err := l.onThis(s, func() error {
			var err error
			h.token, err = l.fence(s, h, req.Holder)
			if err != nil && !l.isDead(s) {
				// Give the lock back, so the session holds exactly what
				// this locker tracks.
				if _, uerr := l.unlockOnce(s, h); uerr != nil {
					l.kill(s, uerr)
				}
			}
			return err
		})
		if err != nil {
			l.forget(h)
			return err
		}
	}
	l.mu.Lock()
	if s.dead || l.closed || l.held[h.key] != h { // killed while we asked: the lock went with it
		l.mu.Unlock()
		l.forget(h)
		return fmt.Errorf("mysql: the lock session ended as the key was granted: %w", driver.ErrUnavailable)
	}
	h.s = s
	s.keys[h.key] = h
	l.mu.Unlock()
	return nil
}

// tryLock runs GET_LOCK(name, 0) on s, whose slot the caller holds. On an
// error the session is either left as it was or given up.
func (l *locker) tryLock(s *session, h *hold) (bool, error) {
	var got sql.NullInt64
	var id int64
	err := s.scan(s.lockStmt, []any{h.name}, &got, &id)
	if err == nil && !got.Valid {
		err = errors.New("GET_LOCK returned NULL")
	}
	if err == nil {
		return got.Int64 == 1, nil
	}
	if !sessionSurvives(err) {
		l.kill(s, err)
		return false, l.fail("acquire", err, h.name)
	}
	// The server replied with an error, after which the lock may be held
	// all the same: give it back, so the session holds what we track.
	if _, uerr := l.unlockOnce(s, h); uerr != nil {
		l.kill(s, uerr)
	}
	return false, l.fail("acquire", err, h.name)
}

// fail is the error of a failed exchange: the kind added, the password and
// the lock name (which begins with the key) removed.
func (l *locker) fail(op string, err error, name string) error {
	if !errors.Is(err, driver.ErrInvalid) && !errors.Is(err, driver.ErrUnavailable) && !errors.Is(err, driver.ErrDenied) {
		err = fmt.Errorf("%w: %w", err, failureKind(err))
	}
	return redactErr(fmt.Errorf("mysql: %s: %w", op, err), l.password, name)
}

// unlockOnce runs RELEASE_LOCK on s, whose slot the caller holds.
func (l *locker) unlockOnce(s *session, h *hold) (bool, error) {
	var ok sql.NullInt64
	var id int64
	if err := s.scan(s.unlockStmt, []any{h.name}, &ok, &id); err != nil {
		return false, err
	}
	return ok.Valid && ok.Int64 == 1, nil
}

// forget drops an attempt that took nothing.
func (l *locker) forget(h *hold) {
	l.mu.Lock()
	if l.held[h.key] == h {
		delete(l.held, h.key)
	}
	l.mu.Unlock()
}

// Release runs RELEASE_LOCK on the session that holds key. RELEASE_LOCK not
// returning 1 (the session no longer held it) is an error matching
// driver.ErrNotHeld. A release for an owner that waits in the server, or
// for whom the key is kept, ends the wait (passing a kept key on to the
// server's next waiter) and returns driver.ErrNotHeld.
//
// If ctx ends first, Release returns an error matching ctx.Err() and the
// release goes on in the background, bounded by the reply deadline:
// cancelling its statement would end the session, and every other lease
// on it. Until then the key stays held for this client.
func (l *locker) Release(ctx context.Context, key string, owner driver.Owner) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errClosedLocker
	}
	h := l.held[key]
	if h != nil && h.owner == owner && h.w != nil {
		l.endWaitLocked(h, h.w) // unlocks l.mu
		return fmt.Errorf("mysql: the owner was waiting, and is no longer: %w", driver.ErrNotHeld)
	}
	if h == nil || h.owner != owner || h.s == nil {
		l.mu.Unlock()
		return errNotHeld
	}
	if ctx.Done() == nil {
		l.mu.Unlock()
		return l.release(h)
	}
	l.wg.Add(1) // under mu, before Close can wait
	l.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer l.wg.Done()
		done <- l.release(h)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("mysql: release: %w (it goes on in the background, bounded by the reply deadline)", ctx.Err())
	}
}

// release unlocks h on its session, waiting for the session's slot.
func (l *locker) release(h *hold) error {
	s := h.s
	select {
	case s.sem <- struct{}{}:
	case <-s.stop:
		return fmt.Errorf("mysql: the lock session ended before the release: %w", driver.ErrNotHeld)
	}
	l.mu.Lock()
	if s.dead || l.held[h.key] != h { // lost (and reported) while we waited
		l.mu.Unlock()
		s.give()
		return fmt.Errorf("mysql: the lock session ended before the release: %w", driver.ErrNotHeld)
	}
	l.mu.Unlock()

	ok, err := l.unlockOnce(s, h)
	if err != nil && sessionSurvives(err) {
		// A release takes effect even if its statement then fails: ask
		// again; 0 or NULL now means the first one worked.
		ok, err = l.unlockOnce(s, h)
		ok = ok || err == nil
	}
	// Off the session before its slot is free: a heartbeat's check, next
	// on the slot, must not ask about the key just released.
	l.mu.Lock()
	if l.held[h.key] == h {
		delete(l.held, h.key)
	}
	delete(s.keys, h.key)
	recycle := s.waiter && len(s.keys) == 0 && !s.dead
	l.mu.Unlock()
	s.give()
	if err != nil {
		l.kill(s, err)
		return redactErr(fmt.Errorf("mysql: release failed and its session was closed, which frees the lock: %w: %w", err, driver.ErrNotHeld), l.password, h.name)
	}
	if !ok {
		l.kill(s, errors.New("RELEASE_LOCK did not return 1"))
		return fmt.Errorf("mysql: RELEASE_LOCK did not return 1: the session no longer held the lock: %w", driver.ErrNotHeld)
	}
	if recycle {
		l.recycleWaiter(s)
	}
	return nil
}

// Close closes every session, which frees the locks still on them, and
// ends the waits. Leases still held are not reported lost: their client
// is closing them. It returns within the reply deadline; what is still in
// flight then ends in the background.
func (l *locker) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.closing)
	sessions := append(l.sessions, l.idle...)
	l.sessions, l.idle = nil, nil
	var waits []*wait
	for _, h := range l.held {
		switch {
		case h.s != nil && h.s.waiter:
			sessions = append(sessions, h.s)
		case h.w != nil && h.w.kept:
			h.w.stopLocked()
			sessions = append(sessions, h.w.s)
		case h.w != nil:
			h.w.stopLocked()
			waits = append(waits, h.w)
		}
	}
	for _, s := range sessions {
		if !s.dead {
			s.dead = true
			close(s.stop)
		}
	}
	l.held = make(map[string]*hold)
	l.mu.Unlock()

	for _, w := range waits {
		w.cancel() // its goroutine discards its session
	}
	done := make(chan struct{})
	go func() {
		l.wg.Wait() // waits, background releases, checks: each bounded
		var discards sync.WaitGroup
		for _, s := range sessions {
			discards.Go(s.discard) // waits for a statement in flight
		}
		discards.Wait()
		close(done)
	}()
	t := time.NewTimer(l.cfg.replyTimeout() + time.Second)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	if l.ownDB {
		return l.db.Close()
	}
	return nil
}
