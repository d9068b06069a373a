package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Renew verifies session grants (TTL 0): package mutex calls it every
// heartbeat with each session lease, and it is how a lock session that
// died (pg_terminate_backend, a server restart, an idle killer, a proxy
// that switched backends) or stopped answering is found. Each session that
// holds keys of the batch is checked in one round trip, the sessions at
// once, each within the reply deadline: the session runs sqlBeat (its
// backend pid and mark), unless a lock or unlock statement sent on it since
// the call began has succeeded; a session that stays busy with a statement
// (which may wait on the server for up to the statement timeout) is
// vouched for by another session, which finds its backend in
// pg_stat_activity. A key whose session
// died, or that this client does not hold for the owner, gets an error
// matching driver.ErrNotHeld. A check that cannot finish gets another
// error, and package mutex asks again: ctx ends (the check goes on in the
// background), or the reply deadline passes (the session is given up, and
// its leases reported lost through OnLost).
//
// Grants do not expire, so an element with a TTL is not extended: it gets
// an error matching driver.ErrUnimplemented.
func (l *locker) Renew(ctx context.Context, batch []driver.Renewal) {
	start := l.now()
	type check struct {
		s        *session
		idx      []int // elements of batch
		err      error // set by the check's goroutine, read after done
		reported bool
	}
	var checks []*check
	bySession := make(map[*session]*check)
	l.mu.Lock()
	for i := range batch {
		r := &batch[i]
		r.Validity, r.Err = 0, nil
		h := l.held[r.Key]
		switch {
		case r.TTL != 0:
			r.Err = fmt.Errorf("postgres: grants last as long as their session, and are not extended: %w", driver.ErrUnimplemented)
		case l.closed:
			r.Err = errClosedLock
		case h == nil || h.owner != r.Owner || h.s == nil:
			r.Err = fmt.Errorf("postgres: key not held by this owner (released, or its lock session ended): %w", driver.ErrNotHeld)
		default:
			c := bySession[h.s]
			if c == nil {
				c = &check{s: h.s}
				bySession[h.s] = c
				checks = append(checks, c)
			}
			c.idx = append(c.idx, i)
		}
	}
	if len(checks) == 0 {
		l.mu.Unlock()
		return
	}
	l.wg.Add(len(checks)) // under mu, before Close can wait
	l.mu.Unlock()

	done := make(chan *check, len(checks))
	for _, c := range checks {
		go func() {
			defer l.wg.Done()
			c.err = l.verify(ctx, c.s, start)
			done <- c
		}()
	}
	for range checks {
		select {
		case c := <-done:
			c.reported = true
			for _, i := range c.idx {
				batch[i].Err = c.err
			}
		case <-ctx.Done():
			err := fmt.Errorf("postgres: verify the lock session: %w", ctx.Err())
			for _, c := range checks {
				if !c.reported {
					for _, i := range c.idx {
						batch[i].Err = err
					}
				}
			}
			return
		}
	}
}

// sqlVouch finds a lock session's backend from another session.
const sqlVouch = `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2)`

// maxVouchAfter bounds how long verify waits for a busy session's slot
// before another session vouches for it.
const maxVouchAfter = time.Second

// verify checks that s is alive and still the backend it was: on s itself
// when its slot is free, else at once from another session that is idle,
// else, once s stays busy for half the time ctx leaves (a statement that
// waits on the server), from another session that is free by then; s's
// slot, if it frees first, checks s itself (which also finds a statement
// sent since start, when it is busy with a stream of them). A busy s with
// no idle session beside it has one opened for it at once (openSpare).
func (l *locker) verify(ctx context.Context, s *session, start int64) error {
	if s.tryTake() {
		defer s.give()
		return l.beatOn(ctx, s, start)
	}
	if o, _ := l.idleOther(s); o != nil {
		defer o.give()
		return l.vouchOn(ctx, s, o, start)
	}
	l.openSpare()
	after := maxVouchAfter
	if dl, ok := ctx.Deadline(); ok {
		after = min(after, time.Until(dl)/2)
	}
	vouch := time.NewTimer(after)
	defer vouch.Stop()
	select {
	case s.sem <- struct{}{}:
		defer s.give()
		return l.beatOn(ctx, s, start)
	case <-s.stop:
		return l.ended(s)
	case <-ctx.Done():
		return fmt.Errorf("postgres: verify the lock session: %w", ctx.Err())
	case <-vouch.C:
		return l.vouch(ctx, s, start)
	}
}

// idleOther takes the slot of a live session of the pool other than s that
// is idle, if there is one, and returns it, with the channel closed when
// the pool next changes.
func (l *locker) idleOther(s *session) (*session, chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.sessions {
		if o != s && o.tryTake() {
			return o, l.changed
		}
	}
	return nil, l.changed
}

// openSpare opens a session for the pool in the background, unless one is
// being opened already or the pool is full: a busy session needs another
// to vouch for it. The open has its own deadline (the reply deadline), not
// a Renew's, and its session joins the pool even if that Renew gave up: a
// connect slower than a heartbeat, cancelled by each Renew's context and
// begun again by the next, would never finish.
func (l *locker) openSpare() {
	l.mu.Lock()
	if l.closed || l.spare || len(l.sessions)+l.creating >= MaxSessions {
		l.mu.Unlock()
		return
	}
	l.spare = true
	l.creating++
	l.wg.Add(1) // under mu, before Close can wait
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.replyTimeout())
		defer cancel()
		go func() {
			select {
			case <-l.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		s, err := l.openSession(ctx, false)
		l.mu.Lock()
		l.spare = false
		l.creating--
		if err == nil && !l.closed {
			l.addSessionLocked(s)
			s = nil
		}
		l.mu.Unlock()
		if err == nil && s != nil { // closed meanwhile
			s.discard()
		}
	}()
}

// beatOn checks s on s, whose slot the caller holds.
func (l *locker) beatOn(ctx context.Context, s *session, start int64) error {
	switch {
	case l.isDead(s):
		return l.ended(s)
	case s.lastOK.Load() >= start:
		return nil // a statement sent since the call began showed it alive
	case ctx.Err() != nil: // a statement, once sent, is never cancelled
		return fmt.Errorf("postgres: verify the lock session: %w", ctx.Err())
	}
	err := s.beat()
	switch {
	case err == nil && l.isDead(s): // given up while the beat was in flight: OnLost has told
		return l.ended(s)
	case err == nil:
		return nil
	case errors.Is(err, errNoReply): // given up: lost, through OnLost
		return fmt.Errorf("postgres: verify the lock session: %w: %w", err, driver.ErrUnavailable)
	case !sessionSurvives(err) || isTxPooling(err):
		l.kill(s, err)
		return l.ended(s)
	}
	return fmt.Errorf("postgres: verify the lock session: %w: %w", err, failureKind(err))
}

// vouch checks s, busy with a statement, from another session: its backend
// is there, so its locks are. The other session is one that is free, or,
// while one is being opened for it, the first to be free; or, when the pool
// is full, the next in turn; if that is s, s is checked itself.
func (l *locker) vouch(ctx context.Context, s *session, start int64) error {
	for try := 0; ; try++ {
		o, changed := l.idleOther(s)
		if o == nil {
			l.openSpare()
			l.mu.Lock()
			opening := l.spare
			l.mu.Unlock()
			if !opening { // the pool is full, or closed
				return l.vouchNext(ctx, s, start)
			}
			select {
			case <-changed:
				continue
			case s.sem <- struct{}{}:
				defer s.give()
				return l.beatOn(ctx, s, start)
			case <-s.stop:
				return l.ended(s)
			case <-ctx.Done():
				return fmt.Errorf("postgres: verify the lock session: %w", ctx.Err())
			}
		}
		err := l.vouchOn(ctx, s, o, start)
		o.give()
		// o died while idle: once more, on another.
		if err == nil || try > 0 || !connGone(err) || !l.isDead(o) || l.isDead(s) {
			return err
		}
	}
}

// vouchNext vouches for s from the pool's next session in turn.
func (l *locker) vouchNext(ctx context.Context, s *session, start int64) error {
	err := l.onSession(ctx, func(o *session) error {
		if o == s {
			return l.beatOn(ctx, s, start)
		}
		return l.vouchOn(ctx, s, o, start)
	})
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) { // waiting for a session
		return fmt.Errorf("postgres: verify the lock session: %w", err)
	}
	return err
}

// vouchOn checks s, busy with a statement, from o, whose slot the caller
// holds.
func (l *locker) vouchOn(ctx context.Context, s, o *session, start int64) error {
	switch {
	case l.isDead(s):
		return l.ended(s)
	case !s.started.Valid:
		return fmt.Errorf("postgres: verify the lock session: busy, and its backend's start is unknown: %w", driver.ErrUnavailable)
	}
	var alive bool
	err := o.queryRow(sqlVouch, []any{s.pid, s.started.Time}, &alive)
	switch {
	case l.isDead(s): // given up while the query was in flight: OnLost has told
		return l.ended(s)
	case err == nil && alive:
		return nil
	case err == nil:
		l.kill(s, errBackendGone)
		return l.ended(s)
	case !sessionSurvives(err) || isTxPooling(err):
		l.kill(o, err)
	}
	if errors.Is(err, driver.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("postgres: verify the lock session: %w: %w", err, failureKind(err))
}

// ended is the error of a key on s, given up.
func (l *locker) ended(s *session) error {
	l.mu.Lock()
	cause := s.cause
	l.mu.Unlock()
	if cause == nil { // Close
		return errClosedLock
	}
	return fmt.Errorf("postgres: the lock session (backend pid %d) ended: %w: %w", s.pid, cause, driver.ErrNotHeld)
}
