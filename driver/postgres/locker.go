package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// locker is one client's Locker: up to MaxSessions lock sessions that its
// held keys share, the keys it holds (each pinned to the session it was
// taken on), and its waits in the server, each on a waiter session of its
// own (see wait.go).
type locker struct {
	cfg     config
	db      *sql.DB
	ownDB   bool    // opened by this driver: closed with the locker
	dialer  *dialer // nil for an application's *sql.DB
	dsn     dsnInfo // for its password, removed from errors; zero for FromDB
	appName string  // application_name of every session
	epoch   time.Time
	host    string
	procPID int
	fenceMu sync.Mutex
	fenceOK bool // the fencing table exists: made or seen by this locker
	dialMu  sync.Mutex
	closing chan struct{}

	mu        sync.Mutex
	closed    bool
	sessions  []*session
	creating  int           // sessions being opened
	spare     bool          // one of them by openSpare
	changed   chan struct{} // closed and replaced when sessions change
	rr        int
	held      map[string]*hold // key -> grant, attempt in flight, or wait
	maxKeys   int
	lockTable int64 // entries in the server's lock table; 0: unknown yet

	failed    map[watchKey]error    // waits the server refused, until their owner's next call
	ending    map[*wait]struct{}    // waits ended, their cancel in flight
	waiters   int                   // waiter sessions waiting or holding a key: MaxWaiters at most
	wsess     map[*session]struct{} // every waiter session, for Close
	idle      []*session            // waiter sessions that hold nothing
	watches   map[watchKey]map[*watchReg]struct{}
	busy      map[string]time.Time // keys a waiting attempt found held lately (queueAtOnce)
	busySwept time.Time
	wg        sync.WaitGroup // waits, verifications, background releases
}

// hold is one key taken, or being taken, by this locker.
type hold struct {
	key    string
	id     int64
	owner  driver.Owner
	s      *session // nil while the attempt is in flight or waits
	w      *wait    // while owner waits in the server
	token  uint64
	onLost func(error)
}

func newLocker(cfg config, db *sql.DB, ownDB bool, d *dialer, dsn dsnInfo) *locker {
	host, _ := os.Hostname()
	l := &locker{
		cfg:     cfg,
		db:      db,
		ownDB:   ownDB,
		dialer:  d,
		dsn:     dsn,
		epoch:   time.Now(),
		host:    host,
		procPID: os.Getpid(),
		closing: make(chan struct{}),
		changed: make(chan struct{}),
		held:    make(map[string]*hold),
		wsess:   make(map[*session]struct{}),
		failed:  make(map[watchKey]error),
		ending:  make(map[*wait]struct{}),
		watches: make(map[watchKey]map[*watchReg]struct{}),
		busy:    make(map[string]time.Time),
	}
	l.appName = appName(newClientID(), l.procPID, host)
	return l
}

// now reads the monotonic clock, as nanoseconds since the locker began.
func (l *locker) now() int64 { return int64(time.Since(l.epoch)) }

// connectError adds what an operator needs to a failure to open or set up
// a session, with the password removed.
func (l *locker) connectError(err error) error {
	switch {
	case errors.Is(err, ErrStandby), errors.Is(err, ErrTransactionPooling), errors.Is(err, driver.ErrUnimplemented), errors.Is(err, errPgxStdlib):
		return err
	}
	if outOfLocks(err) { // a new backend needs a lock-table entry to start
		return redactErr(fmt.Errorf("postgres: connect: the server's lock table is full (raise max_locks_per_transaction, or lower WithMaxKeys): %w: %w", err, driver.ErrUnavailable), l.dsn.password)
	}
	return redactErr(fmt.Errorf("postgres: connect: %w: %w", err, failureKind(err)), l.dsn.password)
}

// start opens the first session, so Connect reports a bad password, an
// unreachable server or a standby at once, and sets the key cap.
func (l *locker) start(ctx context.Context) error {
	s, err := l.openSession(ctx, false)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.addSessionLocked(s)
	l.maxKeys = l.cfg.maxKeys
	if l.maxKeys == 0 {
		l.maxKeys = DefaultMaxKeys
		if half := int(l.lockTable / 2); half > 0 && half < l.maxKeys {
			l.maxKeys = half
		}
	}
	l.mu.Unlock()
	return nil
}

// Acquire makes one pg_try_advisory_lock attempt on a lock session, with
// the fencing token in the same statement when req.Fencing is set. A
// waiting attempt that finds the key held waits in the server's own lock
// queue (see wait.go); on a key found held lately it queues at once, with
// no try (queueAtOnce), and a fencing token comes from a statement of its
// own once the key is granted. The owner's later attempts ask nothing of
// the server until the key is kept for it. A key this locker holds, or is
// acquiring, is never asked for again: PostgreSQL would grant it again to
// the same session and stack it.
func (l *locker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	if err := ctx.Err(); err != nil {
		return driver.Grant{}, err
	}
	id := KeyID(l.cfg.namespace, req.Key)
	h := &hold{key: req.Key, id: id, owner: req.Owner, onLost: req.OnLost}

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return driver.Grant{}, errClosedLock
	}
	if err := l.failedWaitLocked(req.Key, req.Owner); err != nil {
		l.mu.Unlock()
		return driver.Grant{}, err
	}
	if cur := l.held[req.Key]; cur != nil {
		switch {
		case cur.owner == req.Owner && cur.w != nil:
			return l.attemptWaiting(cur, req) // unlocks mu
		case cur.owner == req.Owner && cur.s != nil:
			l.mu.Unlock()
			return driver.Grant{Token: cur.token}, nil // a retry finds its own grant
		}
		l.mu.Unlock()
		return driver.Grant{}, fmt.Errorf("postgres: key held by another owner of this client: %w", driver.ErrLocked)
	}
	if len(l.held) >= l.maxKeys {
		n := len(l.held)
		l.mu.Unlock()
		return driver.Grant{}, fmt.Errorf("postgres: this client holds %d keys, its cap (WithMaxKeys, mutexkit_max_keys); the server's lock table is shared by every session: %w", n, ErrTooManyKeys)
	}
	l.held[req.Key] = h
	atOnce := req.Wait && l.waitAtOnceLocked(req.Key)
	l.mu.Unlock()

	if atOnce {
		if g, done, err := l.queueAtOnce(ctx, h, req); done {
			return g, err
		}
		// No wait to be had: the try, and a refusal makes the Lock poll.
	}
	var s *session
	var ok bool
	var token uint64
	err := l.onSession(ctx, func(on *session) error {
		var err error
		s = on
		ok, token, err = l.tryLock(s, h, req)
		return err
	})
	if err != nil {
		l.forget(h)
		return driver.Grant{}, err
	}
	if !ok {
		if req.Wait && !atOnce {
			l.markBusy(req.Key)
			waiting, err := l.startWait(ctx, h)
			switch {
			case waiting && err == nil:
				return driver.Grant{}, fmt.Errorf("postgres: waiting in the server's queue: %w", driver.ErrLocked)
			case err != nil: // the wait, if it started, is over
				if !waiting {
					l.forget(h)
				}
				return driver.Grant{}, err
			}
		}
		l.forget(h)
		return driver.Grant{}, fmt.Errorf("postgres: %w", driver.ErrLocked)
	}
	l.mu.Lock()
	if s.dead || l.closed { // killed while we asked: the lock went with it
		l.mu.Unlock()
		l.forget(h)
		return driver.Grant{}, fmt.Errorf("postgres: the lock session ended as the key was granted: %w", driver.ErrUnavailable)
	}
	h.s, h.token = s, token
	s.keys[req.Key] = h
	l.mu.Unlock()
	return driver.Grant{Token: token}, nil
}

// tryLock runs the lock statement on s, whose slot the caller holds. On an
// error the session is either left exactly as it was (nothing held for h)
// or killed.
func (l *locker) tryLock(s *session, h *hold, req driver.AcquireRequest) (ok bool, token uint64, err error) {
	var pid int
	if req.Fencing {
		var tok sql.NullInt64
		err = l.ensureFenceTable(s)
		if err == nil {
			err = s.fenced(false, h.id, req.Holder, &ok, &pid, &tok)
		}
		if err == nil {
			token = uint64(tok.Int64)
			if ok && token == 0 {
				err = errors.New("postgres: the fencing statement returned no token")
			}
		}
	} else {
		err = s.scan(s.lockStmt, []any{h.id}, &ok, &pid)
	}
	if err == nil {
		err = s.checkPID(pid, true)
		if err != nil {
			l.kill(s, err)
			return false, 0, err
		}
		return ok, token, nil
	}
	if !sessionSurvives(err) {
		l.kill(s, err)
		return false, 0, fmt.Errorf("postgres: lock session lost: %w: %w", err, driver.ErrUnavailable)
	}
	// The statement failed after the lock may have been taken (a session
	// lock outlives the failed statement): give it back so the session
	// holds exactly what we track.
	if _, cerr := l.unlockOnce(s, h.id); cerr != nil {
		l.kill(s, cerr) // cannot tell what it holds: give it up
	}
	if outOfLocks(err) {
		return false, 0, fmt.Errorf("postgres: the server's lock table is full (raise max_locks_per_transaction, or lower WithMaxKeys): %w: %w", err, driver.ErrUnavailable)
	}
	return false, 0, fmt.Errorf("postgres: acquire: %w: %w", err, failureKind(err))
}

// unlockOnce runs pg_advisory_unlock on s, whose slot the caller holds.
func (l *locker) unlockOnce(s *session, id int64) (bool, error) {
	var ok bool
	var pid int
	args := []any{id}
	if s.waiter { // it sets its waiting timeouts (see wait.go)
		stmt, lock := l.cfg.waitTimeouts()
		args = append(args, stmt, lock)
	}
	err := s.scan(s.unlockStmt, args, &ok, &pid)
	if err != nil {
		return false, err
	}
	return ok, s.checkPID(pid, true)
}

// forget drops an attempt that took nothing.
func (l *locker) forget(h *hold) {
	l.mu.Lock()
	if l.held[h.key] == h {
		delete(l.held, h.key)
	}
	l.mu.Unlock()
}

// Release runs pg_advisory_unlock on the session that holds key; the
// server grants the key at once to the first of its waiters, if any.
// pg_advisory_unlock returning false (the session no longer held it) is an
// error matching driver.ErrNotHeld. An owner that waits in the server ends
// its wait (see wait.go), and gets driver.ErrNotHeld.
//
// If ctx ends first, Release returns an error matching ctx.Err() and the
// release goes on in the background: a release given up half way would
// leave the key held by a live session, and cancelling its statement
// would end the session, and every other lease on it. The release is
// bounded (the slot is freed by a statement that has a reply deadline,
// and its own statement has one): it frees the key, or its session is
// given up, which frees the key on the server and reports the session's
// other leases lost. Until then the key stays held for this client.
func (l *locker) Release(ctx context.Context, key string, owner driver.Owner) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errClosedLock
	}
	if l.failedWaitLocked(key, owner) != nil {
		l.mu.Unlock()
		return fmt.Errorf("postgres: key not held by this owner (the server refused its wait): %w", driver.ErrNotHeld)
	}
	h := l.held[key]
	if h != nil && h.owner == owner && h.w != nil {
		l.endWaitLocked(h, h.w) // unlocks mu
		return fmt.Errorf("postgres: key not held by this owner (its wait ended): %w", driver.ErrNotHeld)
	}
	if h == nil || h.owner != owner || h.s == nil {
		l.mu.Unlock()
		return fmt.Errorf("postgres: key not held by this owner: %w", driver.ErrNotHeld)
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
		return fmt.Errorf("postgres: release: %w (it goes on in the background, bounded by the reply deadline)", ctx.Err())
	}
}

// release unlocks h on its session, waiting for the session's slot.
func (l *locker) release(h *hold) error {
	s := h.s
	select {
	case s.sem <- struct{}{}:
	case <-s.stop:
		return fmt.Errorf("postgres: the lock session ended before the release: %w", driver.ErrNotHeld)
	}
	l.mu.Lock()
	if s.dead || l.held[h.key] != h { // lost (and reported) while we waited
		l.mu.Unlock()
		s.give()
		return fmt.Errorf("postgres: the lock session ended before the release: %w", driver.ErrNotHeld)
	}
	l.mu.Unlock()

	ok, err := l.unlockOnce(s, h.id)
	if err != nil && sessionSurvives(err) {
		// An unlock takes effect even if its statement then fails (a
		// timeout, say): ask again; false now means the first one worked.
		ok, err = l.unlockOnce(s, h.id)
		ok = ok || err == nil
	}
	s.give()

	l.mu.Lock()
	if l.held[h.key] == h {
		delete(l.held, h.key)
	}
	delete(s.keys, h.key)
	l.mu.Unlock()
	if err != nil {
		l.kill(s, err)
		return fmt.Errorf("postgres: release failed and its session was closed, which frees the lock: %w: %w", err, driver.ErrNotHeld)
	}
	if !ok {
		l.kill(s, errors.New("pg_advisory_unlock returned false"))
		return fmt.Errorf("postgres: pg_advisory_unlock returned false: the session no longer held the lock: %w", driver.ErrNotHeld)
	}
	if s.waiter {
		l.recycleWaiter(s) // it holds nothing now: kept for the next wait
	}
	return nil
}

// Ping checks on a lock session that the server answers, is the same
// backend, and is not a standby.
func (l *locker) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var recovery bool
	err := l.onSession(ctx, func(s *session) error {
		err := s.beat()
		if err == nil {
			err = s.queryRow(`SELECT pg_is_in_recovery()`, nil, &recovery)
		}
		if err != nil && (!sessionSurvives(err) || isTxPooling(err)) {
			l.kill(s, err)
		}
		return err
	})
	switch {
	case err == nil && recovery:
		err = errStandby
	case err == nil, errors.Is(err, ctx.Err()), errors.Is(err, driver.ErrClosed):
		return err
	case !errors.Is(err, driver.ErrInvalid) && !errors.Is(err, driver.ErrUnavailable) && !errors.Is(err, driver.ErrDenied):
		err = fmt.Errorf("%w: %w", err, failureKind(err))
	}
	return redactErr(fmt.Errorf("postgres: ping: %w", err), l.dsn.password)
}

// Close closes every session, which frees the locks still on them, and
// ends the waits in the server. Leases still held are not reported lost:
// their client is closing them. A statement in flight on a connection
// this driver dialed is ended by closing its socket; a wait in the server
// is also cancelled (pg_cancel_backend, on a session of the client's that
// is free, or whose statement ends within the reply deadline, else on a
// new connection of the pool).
// Close returns within the reply deadline: what is still in flight then
// (a statement on an application's connection to a silent server) ends in
// the background, and the session is closed once its statement ends.
func (l *locker) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.closing)
	sessions := l.sessions
	l.sessions = nil
	for s := range l.wsess {
		sessions = append(sessions, s)
	}
	l.wsess, l.idle = nil, nil
	clear(l.failed)
	var waiting []*wait // waits in the server
	for w := range l.ending {
		// A Release (a Lock that gave up as its client closes) ended it,
		// and its cancel, on a lock session, may not be sent now.
		waiting = append(waiting, w)
	}
	for _, h := range l.held {
		if w := h.w; w != nil && !w.over {
			w.over = true
			w.timer.Stop()
			close(w.ended)
			if w.sent && !w.kept {
				waiting = append(waiting, w)
			}
		}
	}
	for _, s := range sessions {
		s.dead = true
		close(s.stop)
	}
	l.held = make(map[string]*hold)
	for k := range l.watches {
		l.wakeLocked(k) // their next attempt finds the client closed
	}
	l.mu.Unlock()

	var free *session   // one free session, kept to cancel the waits on
	var busy []*session // sessions of the application's pool with a statement in flight
	for _, s := range sessions {
		switch {
		case s.tryTake():
			if free == nil && len(waiting) > 0 {
				free = s
				continue
			}
			s.give()
		case s.netConn != nil:
			s.netConn.Close() // the server sees the session end, and frees its locks
		case !slices.ContainsFunc(waiting, func(w *wait) bool { return w.s == s }):
			busy = append(busy, s)
		}
	}
	done := make(chan struct{})
	go func() {
		if len(waiting) > 0 {
			// Their requests leave the server's queues now, rather than
			// when the server finds their connections closed (within
			// client_connection_check_interval) or gets to them. On a
			// session of the client's own when one is free: an
			// application's pool (FromDB) may have no connection to spare
			// until Close frees those of the client.
			if free == nil {
				// One whose statement ends within the reply deadline, if
				// any: a new pool connection may be had only once Close
				// has discarded the client's.
				free = firstFree(busy, l.cfg.replyTimeout())
			}
			l.cancelWaits(free, waiting)
		}
		l.wg.Wait() // waits, verifications, background releases: each bounded
		var discards sync.WaitGroup
		for _, s := range sessions {
			discards.Go(s.discard) // waits for a statement in flight
		}
		discards.Wait()
		close(done)
	}()
	t := time.NewTimer(l.cfg.replyTimeout())
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
