package mysql

import (
	"context"
	"errors"
	"fmt"

	"github.com/mutexkit/mutexkit/driver"
)

// The pool: a locker's sessions, shared by its held keys.

// addSessionLocked adds s to the pool. Callers hold l.mu.
func (l *locker) addSessionLocked(s *session) {
	l.sessions = append(l.sessions, s)
	close(l.changed)
	l.changed = make(chan struct{})
}

// session returns a live pool session with its slot taken: a free one, a
// new one while there are fewer than MaxSessions, or else the next in turn
// once it is free. Waiting honours ctx: nothing is at stake yet.
func (l *locker) session(ctx context.Context) (*session, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, errClosedLocker
		}
		n := len(l.sessions)
		for i := range n {
			s := l.sessions[(l.rr+i)%n]
			if s.tryTake() {
				l.rr++
				l.mu.Unlock()
				return s, nil
			}
		}
		if n+l.creating < MaxSessions {
			l.creating++
			l.mu.Unlock()
			s, err := l.openSession(ctx, false)
			l.mu.Lock()
			l.creating--
			if err != nil {
				l.mu.Unlock()
				return nil, err
			}
			if l.closed {
				l.mu.Unlock()
				s.discard()
				return nil, errClosedLocker
			}
			s.tryTake() // new: free
			l.addSessionLocked(s)
			l.mu.Unlock()
			return s, nil
		}
		changed := l.changed
		s := l.sessions[l.rr%n]
		l.rr++
		l.mu.Unlock()
		select {
		case s.sem <- struct{}{}:
			if !l.isDead(s) {
				return s, nil
			}
			s.give()
		case <-s.stop:
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.closing:
			return nil, errClosedLocker
		}
	}
}

// onSession runs f on a pool session whose slot it holds, then frees the
// slot. When f finds the session dead (its connection closed while it sat
// idle: a server restart, wait_timeout) and gives it up, f runs once more
// on a fresh one, as database/sql retries a connection that went bad in
// the pool: nothing f asked for was done on the dead one. Waiting for a
// session honours ctx; f is never cancelled. An error of f other than a
// reply of the server (after which the session lives on) gives the
// session up, and reports the loss of its keys at once, should f not have
// done so: the session may be gone, and its locks with it.
func (l *locker) onSession(ctx context.Context, f func(s *session) error) error {
	for try := 0; ; try++ {
		s, err := l.session(ctx)
		if err != nil {
			return err
		}
		err = f(s)
		if err != nil && !sessionSurvives(err) && !errors.Is(err, ErrReadOnly) {
			l.kill(s, err)
		}
		s.give()
		if err == nil || try > 0 || !connGone(err) || !l.isDead(s) {
			return err
		}
	}
}

// onThis runs f on s, whose slot it takes, unless s is given up first.
func (l *locker) onThis(s *session, f func() error) error {
	select {
	case s.sem <- struct{}{}:
	case <-s.stop:
		return fmt.Errorf("mysql: the lock session ended: %w", driver.ErrUnavailable)
	}
	defer s.give()
	if l.isDead(s) {
		return fmt.Errorf("mysql: the lock session ended: %w", driver.ErrUnavailable)
	}
	return f()
}

// connGone reports an error that shows a session's connection closed: not
// a reply of the server's, nor a missed reply deadline (the connection
// may live on), nor a proxy's switch of connections.
func connGone(err error) bool {
	return !sessionSurvives(err) && !errors.Is(err, errNoReply) && !errors.Is(err, ErrMultiplexing) && !errors.Is(err, driver.ErrClosed)
}

func (l *locker) isDead(s *session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return s.dead
}

// kill gives up a session: every key on it is reported lost (OnLost), and
// its connection is discarded, which frees whatever it still holds on the
// server.
func (l *locker) kill(s *session, cause error) {
	l.mu.Lock()
	if s.dead {
		l.mu.Unlock()
		return
	}
	s.dead = true
	for i, x := range l.sessions {
		if x == s {
			l.sessions = append(l.sessions[:i], l.sessions[i+1:]...)
			break
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
	lost := make([]*hold, 0, len(s.keys))
	for k, h := range s.keys {
		if l.held[k] == h {
			delete(l.held, k)
		}
		lost = append(lost, h)
	}
	s.keys = nil
	close(s.stop)
	if l.closed {
		// Close may be in wg.Wait already (no Add then), and its client
		// ended these leases: they are closed, not lost.
		l.mu.Unlock()
		s.discard()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()

	go func() { // may wait for a statement in flight, bounded by its deadline
		defer l.wg.Done()
		s.discard()
	}()
	what := "ended, so the server freed the lock and may have granted it to another holder already"
	switch {
	case errors.Is(cause, errNoReply):
		what = "was given up, since the server stopped answering; the server frees the lock when it sees the connection closed, and may have granted it to another holder already"
	case errors.Is(cause, ErrMultiplexing):
		what = "was given up: its statements reached other server connections, so the lock may stay held by the proxy's connection or be granted to another holder"
	}
	for _, h := range lost {
		if h.onLost != nil {
			h.onLost(redactErr(fmt.Errorf("mysql: the session (connection %d) that held the lock %s: %w: %w", s.id, what, cause, driver.ErrNotHeld), l.password, h.name))
		}
	}
}
