package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"time"
)

// Every wait on a lock session has a deadline: the reply deadline, the
// statement timeout (which bounds each statement on the server) plus
// replyMargin for the network. A server that stops answering while its TCP
// is still acknowledged (a stopped backend, a partition behind a proxy or
// a NAT) would otherwise hold the caller, and the verification that is
// meant to notice it, for ever. A session that misses the deadline is
// given up: its leases are reported lost, and closing its connection
// frees its locks on the server.
//
// No caller's context is used instead (see session): a statement ended
// half way leaves the session in doubt, and the session carries other
// leases.

// replyMargin is the time a reply may take on the network, beyond the
// statement timeout.
const replyMargin = 500 * time.Millisecond

// replyTimeout is the reply deadline of one exchange on a lock session.
func (c *config) replyTimeout() time.Duration { return c.stmtTimeout + replyMargin }

// exchange runs f, one statement (or prepare) on the session, and returns
// its error, or one matching errNoReply once the reply deadline passes,
// with the session then given up (kill). The caller holds sem, or owns the
// session alone.
//
// When this driver dialed the socket, or a module's pool gives it
// (backend.Socket: pgxv5.FromPool), its read and write deadline ends the
// wait in f itself. An application's connection (FromDB) is out of
// reach: f then runs in a goroutine of its own, which is left to finish
// when the connection finally breaks; the caller must not read what f
// writes unless exchange returned nil.
func (s *session) exchange(f func() error) error {
	return s.exchangeWithin(s.l.cfg.replyTimeout(), f)
}

// exchangeWithin is exchange with the reply deadline d (a wait in the
// server: see wait.go).
func (s *session) exchangeWithin(d time.Duration, f func() error) error {
	if s.netConn != nil {
		deadline := time.Now().Add(d)
		s.netConn.SetDeadline(deadline)
		err := f()
		s.netConn.SetDeadline(time.Time{})
		// An error the server sent is a reply, however late it came.
		if _, sent := serverError(err); err != nil && !sent &&
			(errors.Is(err, os.ErrDeadlineExceeded) || !time.Now().Before(deadline)) {
			return s.noReply(d)
		}
		return err
	}
	done := make(chan error, 1)
	go func() { done <- f() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return s.noReply(d)
	}
}

// noReply gives the session up for a missed reply deadline.
func (s *session) noReply(d time.Duration) error {
	err := fmt.Errorf("postgres: lock session: waited %v (the statement's bound on the server plus %v): %w", d, replyMargin, errNoReply)
	s.l.kill(s, err)
	return err
}

// conn takes a connection for a new lock session. lib/pq's connect
// timeout, which Connect sets, bounds the connections this driver dials;
// an application's pool may have none, so the wait for it ends at the
// reply deadline (or when ctx ends), and a connection that comes later is
// discarded.
func (l *locker) conn(ctx context.Context) (*sql.Conn, error) {
	if l.dialer != nil {
		return l.db.Conn(ctx)
	}
	type result struct {
		c   *sql.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Bounded as well, a little after the wait below, so that this
		// goroutine ends even when the pool's own connect has no timeout
		// (a pgx pool's connect to a silent server waits on its context).
		cctx, cancel := context.WithTimeout(ctx, l.cfg.replyTimeout()+replyMargin)
		defer cancel()
		c, err := l.db.Conn(cctx)
		ch <- result{c, err}
	}()
	late := func() {
		if r := <-ch; r.c != nil {
			r.c.Raw(func(any) error { return driver.ErrBadConn })
		}
	}
	t := time.NewTimer(l.cfg.replyTimeout())
	defer t.Stop()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go late()
		return nil, ctx.Err()
	case <-t.C:
		go late()
		return nil, fmt.Errorf("postgres: waited %v for a connection from the application's pool: %w", l.cfg.replyTimeout(), errNoReply)
	}
}
