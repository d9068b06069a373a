package mysql

import (
	"context"
	"fmt"

	"github.com/mutexkit/mutexkit/driver"
)

// Renew verifies session grants (TTL 0): package mutex calls it every
// heartbeat with each session lease, and it is how a lock session that
// died (KILL CONNECTION, a server restart, wait_timeout) or stopped
// answering is found. Each session that holds keys of the batch is checked
// in one round trip, the sessions at once: CONNECTION_ID() is still its
// connection's, and IS_USED_LOCK of one of the keys it holds names that
// connection. The key is chosen once the check has the session's slot, so
// a release that ran first (and took the key off the session) is never
// mistaken for a loss. A key whose session died, or that this
// client does not hold for the owner, gets an error matching
// driver.ErrNotHeld. A check that cannot finish (ctx ends while the
// session is busy) gets another error, and package mutex asks again; a
// reply that misses the deadline gives the session up (its leases are
// reported lost through OnLost).
//
// Grants do not expire, so an element with a TTL is not extended: it gets
// an error matching driver.ErrUnimplemented.
func (l *locker) Renew(ctx context.Context, batch []driver.Renewal) {
	type check struct {
		s   *session
		idx []int
		err error
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
			r.Err = fmt.Errorf("mysql: grants last as long as their session, and are not extended: %w", driver.ErrUnimplemented)
		case l.closed:
			r.Err = errClosedLocker
		case h == nil || h.owner != r.Owner || h.s == nil:
			r.Err = fmt.Errorf("mysql: key not held by this owner (released, or its lock session ended): %w", driver.ErrNotHeld)
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
			c.err = l.verify(ctx, c.s)
			done <- c
		}()
	}
	reported := make(map[*check]bool, len(checks))
	for range checks {
		select {
		case c := <-done:
			reported[c] = true
			for _, i := range c.idx {
				batch[i].Err = c.err
			}
		case <-ctx.Done():
			err := fmt.Errorf("mysql: verify the lock session: %w", ctx.Err())
			for _, c := range checks {
				if !reported[c] {
					for _, i := range c.idx {
						batch[i].Err = err
					}
				}
			}
			return
		}
	}
}

// verify checks s on s itself, once its slot is free: its connection, and
// one of the keys it holds then (none: the connection alone).
func (l *locker) verify(ctx context.Context, s *session) error {
	select {
	case s.sem <- struct{}{}:
	case <-s.stop:
		return fmt.Errorf("mysql: the lock session ended: %w", driver.ErrNotHeld)
	case <-ctx.Done():
		return fmt.Errorf("mysql: verify the lock session (busy): %w", ctx.Err())
	}
	defer s.give()
	l.mu.Lock()
	dead, name := s.dead, ""
	for _, h := range s.keys { // map order: a different key each time, roughly
		name = h.name
		break
	}
	l.mu.Unlock()
	if dead {
		return fmt.Errorf("mysql: the lock session ended: %w", driver.ErrNotHeld)
	}
	holds, err := s.beat(name)
	switch {
	case err != nil && sessionSurvives(err):
		// The server answered, so the session lives, and with it its
		// locks; the outcome is unknown all the same: mutex asks again.
		return l.fail("verify the lock session", err, name)
	case err != nil:
		l.kill(s, err)
		return redactErr(fmt.Errorf("mysql: the lock session ended: %w: %w", err, driver.ErrNotHeld), l.password, name)
	case name != "" && !holds:
		// Alive, but not holding one of its keys: nothing this driver does
		// lets that happen (a RELEASE_ALL_LOCKS from outside?). Give the
		// session up: what it holds is no longer what this client tracks.
		err := fmt.Errorf("IS_USED_LOCK does not name the session's connection %d for one of its keys", s.id)
		l.kill(s, err)
		return fmt.Errorf("mysql: %w: %w", err, driver.ErrNotHeld)
	}
	return nil
}
