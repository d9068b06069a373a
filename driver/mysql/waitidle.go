package mysql

import (
	"strconv"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// A waiter session's wait_timeout.
//
// The server grants a released key to its first waiter's connection, and
// keeps it there while that connection sits idle. A waiter frozen, or cut
// off by the network, never turns the grant into its own nor gives it up:
// the key stays on its connection until the server's wait_timeout ends it,
// and the waiters behind wait as long. So a waiter session runs with a
// short wait_timeout (waiterIdle), which bounds that stall; a key that
// stays on it for raiseAfter (a grant held that long, never a short one)
// gets the holder's wait_timeout (WithIdleTimeout) in one statement, so
// that a heartbeat slower than waiterIdle does not lose it. A raised
// session is not recycled for another wait.

// waiterIdle is the wait_timeout of a waiter session: the owner of a kept
// key asks for it within driver.QueueHold, or it is released.
const waiterIdle = driver.QueueHold + 3*time.Second

// raiseAfter is how long a key stays on a waiter session before the
// session gets the holder's wait_timeout: well inside waiterIdle.
const raiseAfter = waiterIdle / 2

// setIdle is the statement that sets a session's wait_timeout.
func setIdle(d time.Duration) string {
	return `SET SESSION wait_timeout = ` + strconv.FormatInt(int64(d/time.Second), 10)
}

// raiseIdle gives s, a waiter session on which h's key was just kept,
// the holder's wait_timeout once the key has stayed on it, as h's grant,
// for raiseAfter.
func (l *locker) raiseIdle(s *session, h *hold) {
	defer l.wg.Done()
	t := time.NewTimer(raiseAfter)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.stop:
		return
	case <-l.closing:
		return
	}
	held := func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return !s.dead && !l.closed && l.held[h.key] == h && h.s == s
	}
	if !held() {
		return
	}
	select {
	case s.sem <- struct{}{}:
	case <-s.stop:
		return
	case <-l.closing:
		return
	}
	defer s.give()
	if !held() { // released meanwhile, and s perhaps waiting for another key
		return
	}
	err := s.exec(setIdle(l.cfg.idleTimeout))
	switch {
	case err == nil:
		l.mu.Lock()
		s.raised = true
		l.mu.Unlock()
	case !sessionSurvives(err):
		l.kill(s, err)
	}
}
