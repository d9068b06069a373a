package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// locker is one client's Locker: up to MaxSessions lock sessions that its
// held keys share, the keys it holds (each pinned to the session it was
// taken on), and its waiters' wake-up channels.
type locker struct {
	cfg      config
	db       *sql.DB
	ownDB    bool    // opened by this driver: closed with the locker
	dialer   *dialer // nil for an application's *sql.DB
	dsn      dsnInfo // for the LISTEN connection; zero when there is none
	appName  string  // application_name of every session
	epoch    time.Time
	host     string
	procPID  int
	fenceMu  sync.Mutex
	fenceOK  bool         // the fencing table exists: made or seen by this locker
	queue    atomic.Int32 // what it knows of QueueTable: queueAbsent, ...
	waits    waits        // its waiting owners' places
	dialMu   sync.Mutex
	closing  chan struct{}
	listener *listener // nil when wake-ups cannot be had

	mu        sync.Mutex
	closed    bool
	sessions  []*session
	creating  int           // sessions being opened
	spare     bool          // one of them by openSpare
	changed   chan struct{} // closed and replaced when sessions change
	rr        int
	held      map[string]*hold // key -> grant, or attempt in flight
	maxKeys   int
	lockTable int64 // entries in the server's lock table; 0: unknown yet

	wg sync.WaitGroup // the listener, verifications, background releases
}

// hold is one key taken, or being taken, by this locker.
type hold struct {
	key    string
	id     int64
	owner  driver.Owner
	s      *session // nil while the attempt is in flight
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
	}
	l.appName = appName(newClientID(), l.procPID, host)
	if dsn.pq.Database != "" { // parsed: the DSN's or WithListenDSN's
		l.listener = newListener(l)
	}
	return l
}

// now reads the monotonic clock, as nanoseconds since the locker began.
func (l *locker) now() int64 { return int64(time.Since(l.epoch)) }

// connectError adds what an operator needs to a failure to open or set up
// a session, with the password removed.
func (l *locker) connectError(err error) error {
	switch {
	case errors.Is(err, ErrStandby), errors.Is(err, ErrTransactionPooling), errors.Is(err, driver.ErrUnimplemented):
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
	s, err := l.openSession(ctx)
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
// the fencing token in the same statement when req.Fencing is set, and
// with the wait queue's rules (see QueueTable): a TryLock is refused
// while waiters are queued, and a waiting attempt takes the key only in
// its turn, else keeps its place. A waiting attempt behind others may be
// answered from its last statement, with no round trip (see waits). A key
// this locker holds, or is acquiring, is never asked for again: PostgreSQL
// would grant it again to the same session and stack it.
func (l *locker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	if err := ctx.Err(); err != nil {
		return driver.Grant{}, err
	}
	id := KeyID(l.cfg.namespace, req.Key)
	var gen uint64
	if req.Wait {
		gen = l.listenerGen()
		if l.waits.queued(req.Owner, gen, l.now()) {
			return driver.Grant{}, errQueued
		}
	}
	h := &hold{key: req.Key, id: id, owner: req.Owner, onLost: req.OnLost}

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return driver.Grant{}, errClosedLock
	}
	if cur := l.held[req.Key]; cur != nil {
		l.mu.Unlock()
		if cur.owner == req.Owner && cur.s != nil {
			return driver.Grant{Token: cur.token}, nil // a retry finds its own grant
		}
		return driver.Grant{}, fmt.Errorf("postgres: key held by another owner of this client: %w", driver.ErrLocked)
	}
	if len(l.held) >= l.maxKeys {
		n := len(l.held)
		l.mu.Unlock()
		return driver.Grant{}, fmt.Errorf("postgres: this client holds %d keys, its cap (WithMaxKeys, mutexkit_max_keys); the server's lock table is shared by every session: %w", n, ErrTooManyKeys)
	}
	l.held[req.Key] = h
	l.mu.Unlock()

	sent := l.now()
	if req.Wait {
		// Before the statement: a wake-up from here on makes the next
		// attempt ask the server. The place stays until a grant or Release.
		l.waits.sending(req.Owner, id, gen, sent)
	}
	var s *session
	var ok bool
	var token uint64
	var ahead sql.NullFloat64
	err := l.onSession(ctx, func(on *session) error {
		var err error
		s = on
		ok, token, ahead, err = l.tryLock(s, h, req)
		return err
	})
	if err != nil {
		l.forget(h)
		return driver.Grant{}, err
	}
	if !ok {
		l.forget(h)
		if req.Wait && ahead.Valid {
			l.waits.behind(req.Owner, sent, ahead.Float64)
		}
		return driver.Grant{}, fmt.Errorf("postgres: %w", driver.ErrLocked)
	}
	if req.Wait {
		l.waits.drop(req.Owner) // the statement deleted its row
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

// errQueued is a waiting attempt answered without a round trip.
var errQueued = fmt.Errorf("postgres: waiting in turn behind others: %w", driver.ErrLocked)

// tryLock runs the lock statement on s, whose slot the caller holds. On an
// error the session is either left exactly as it was (nothing held for h)
// or killed. ahead is the statement's answer to a waiter not granted (see
// lockSQL).
func (l *locker) tryLock(s *session, h *hold, req driver.AcquireRequest) (ok bool, token uint64, ahead sql.NullFloat64, err error) {
	var got sql.NullBool
	var pid int
	var tok sql.NullInt64
	var mode int32
	for try := 0; ; try++ {
		err = nil
		mode = l.queueMode()
		wait := req.Wait && mode == queuePresent
		if req.Fencing {
			err = l.ensureFenceTable(s)
		}
		if err == nil {
			args := []any{h.id}
			if wait {
				args = append(args, req.Owner.String(), l.channelArg())
			}
			if req.Fencing {
				args = append(args, l.fenceArgs(req.Holder)...)
			}
			err = s.run(lockSQL(mode, wait, req.Fencing), args, &got, &pid, &tok, &ahead)
		}
		if try > 0 {
			break
		}
		if err == nil && !got.Valid && mode != queuePresent {
			l.queueSeen() // it appeared: ask again, with the queue's rules
			continue
		}
		if err != nil && l.queueGone(err) {
			continue
		}
		break
	}
	if err == nil && got.Valid {
		ok = got.Bool
		token = uint64(tok.Int64)
		if ok && req.Fencing && token == 0 {
			err = errors.New("postgres: the fencing statement returned no token")
		}
	} else if err == nil {
		err = errors.New("postgres: the lock statement returned no result")
	}
	if err == nil {
		err = s.checkPID(pid, true)
		if err != nil {
			l.kill(s, err)
			return false, 0, ahead, err
		}
		if !ok && req.Wait && mode == queueAbsent {
			// The first wait for a held key: make the queue, which the
			// next attempt joins.
			if cerr := l.ensureQueueTable(s); cerr != nil && !sessionSurvives(cerr) {
				l.kill(s, cerr)
			}
		}
		return ok, token, ahead, nil
	}
	if !sessionSurvives(err) {
		l.kill(s, err)
		return false, 0, ahead, fmt.Errorf("postgres: lock session lost: %w: %w", err, driver.ErrUnavailable)
	}
	// The statement failed after the lock may have been taken (a session
	// lock outlives the failed statement): give it back so the session
	// holds exactly what we track.
	if _, cerr := l.unlockOnce(s, h.id); cerr != nil {
		l.kill(s, cerr) // cannot tell what it holds: give it up
	}
	if outOfLocks(err) {
		return false, 0, ahead, fmt.Errorf("postgres: the server's lock table is full (raise max_locks_per_transaction, or lower WithMaxKeys): %w: %w", err, driver.ErrUnavailable)
	}
	return false, 0, ahead, fmt.Errorf("postgres: acquire: %w: %w", err, failureKind(err))
}

// unlock runs the release statement on s (see unlockSQL): the unlock, and
// the NOTIFY of the key's first waiter. A client that finds the queue
// table made since it last looked notifies the head with one more
// statement.
func (l *locker) unlock(s *session, id int64) (bool, error) {
	var ok bool
	var pid int
	var third any
	mode := l.queueMode()
	err := s.run(unlockSQL(mode), []any{id}, &ok, &pid, &third)
	if err != nil && l.queueGone(err) {
		mode = l.queueMode()
		err = s.run(unlockSQL(mode), []any{id}, &ok, &pid, &third)
	}
	if err != nil {
		return false, err
	}
	if err := s.checkPID(pid, true); err != nil {
		return false, err
	}
	if ok && mode != queuePresent && third == true {
		l.queueSeen()
		l.passOn(s, id, driver.Owner{})
	}
	return ok, nil
}

// unlockOnce runs the release statement on s. On a full lock table the
// statement may fail for want of an entry: the unlock is then run alone,
// which needs none (the head then finds the key free by asking), rather
// than giving the session and every key on it up.
func (l *locker) unlockOnce(s *session, id int64) (bool, error) {
	ok, err := l.unlock(s, id)
	if outOfLocks(err) {
		var pid int
		err = s.queryRow(`SELECT pg_advisory_unlock(`+strconv.FormatInt(id, 10)+`), pg_backend_pid()`, nil, &ok, &pid)
		if err == nil {
			err = s.checkPID(pid, true)
		}
	}
	if err != nil {
		return false, err
	}
	return ok, nil
}

// forget drops an attempt that took nothing.
func (l *locker) forget(h *hold) {
	l.mu.Lock()
	if l.held[h.key] == h {
		delete(l.held, h.key)
	}
	l.mu.Unlock()
}

// Release runs pg_advisory_unlock on the session that holds key, with the
// NOTIFY that wakes the first waiter in the same statement. pg_advisory_unlock
// returning false (the session no longer held it) is an error matching
// driver.ErrNotHeld. An owner that waited and gave up leaves the queue
// (and tells the waiter after it), and gets driver.ErrNotHeld.
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
	h := l.held[key]
	if h == nil || h.owner != owner || h.s == nil {
		l.mu.Unlock()
		if id, had := l.waits.drop(owner); had && l.queueMode() == queuePresent {
			// Best effort: a row left behind is passed over within QueueHold.
			l.onSession(ctx, func(s *session) error { return l.passOn(s, id, owner) })
		}
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

	ok, err := l.unlock(s, h.id)
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

// Close stops the listener and closes every session, which frees the locks
// still on them. Leases still held are not reported lost: their client is
// closing them. A statement in flight on a connection this driver dialed
// is ended by closing its socket. Close returns within the reply deadline:
// what is still in flight then (a statement on an application's
// connection to a silent server, a LISTEN connection being opened) ends in
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
	for _, s := range sessions {
		s.dead = true
		close(s.stop)
	}
	l.held = make(map[string]*hold)
	l.mu.Unlock()

	l.waits.wakeAll()
	l.waits.clear()
	if l.listener != nil {
		l.listener.close()
	}
	for _, s := range sessions {
		switch {
		case s.tryTake():
			s.give()
		case s.netConn != nil:
			s.netConn.Close() // the server sees the session end, and frees its locks
		}
	}
	done := make(chan struct{})
	go func() {
		l.wg.Wait() // the listener, verifications, background releases: each bounded
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
