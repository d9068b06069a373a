package mysql

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"time"
)

// session is one server connection that holds locks: a *sql.Conn that is
// never handed back to a pool (it is discarded when done, since it may
// hold locks). Statements on it run one at a time (sem), never with a
// caller's context: go-sql-driver cancels a statement whose context ends
// by closing the connection, which would drop every lock on it. Each runs
// under a context of its own with the reply deadline instead, so a server
// that stops answering costs the session (and its locks, which the server
// frees when it sees the connection closed), never a hung call.
type session struct {
	l      *locker
	conn   *sql.Conn
	id     int64 // CONNECTION_ID()
	waiter bool  // a waiter's session (wait.go), not in the pool

	sem  chan struct{} // held while a statement runs
	stop chan struct{} // closed when the session is given up

	lockStmt, unlockStmt, beatStmt *sql.Stmt
	fenceStmt                      *sql.Stmt // prepared on first use; guarded by sem
	waitStmt                       *sql.Stmt // a waiter session's, prepared on first use

	// Guarded by l.mu.
	dead      bool
	keys      map[string]*hold
	raised    bool      // a waiter session given a holder's wait_timeout (waitidle.go)
	idleSince time.Time // a waiter session's, since it was recycled
}

// The statements of a lock session. Each returns CONNECTION_ID(), so that
// a proxy that runs a session's statements on different server
// connections is seen at once, for free.
const (
	sqlLock   = `SELECT GET_LOCK(?, 0), CONNECTION_ID()`
	sqlUnlock = `SELECT RELEASE_LOCK(?), CONNECTION_ID()`
	// sqlBeat: the session is alive, the same connection, and holds the
	// name given (the empty name when it holds none).
	sqlBeat  = `SELECT IS_USED_LOCK(?), CONNECTION_ID()`
	sqlProbe = `SELECT CONNECTION_ID(), @@global.read_only, VERSION()`
)

// background is the parent of every statement's context on a lock
// session: see session.
var background = context.Background()

// errNoReply: a statement's reply did not come within the reply deadline.
var errNoReply = errors.New("no reply from the server in time")

// openSession opens a new lock session: a dedicated connection, checked
// (not read-only) and configured. waiter marks a waiter's session.
func (l *locker) openSession(ctx context.Context, waiter bool) (*session, error) {
	dctx, cancel := context.WithTimeout(ctx, l.cfg.replyTimeout())
	conn, err := l.db.Conn(dctx)
	cancel()
	if err != nil {
		return nil, l.connectError(err)
	}
	s := &session{
		l:      l,
		conn:   conn,
		waiter: waiter,
		sem:    make(chan struct{}, 1),
		stop:   make(chan struct{}),
		keys:   make(map[string]*hold),
	}
	if err := s.init(); err != nil {
		s.discard()
		return nil, l.connectError(err)
	}
	return s, nil
}

func (s *session) init() error {
	var readOnly bool
	var version string
	if err := s.queryRow(sqlProbe, nil, &s.id, &readOnly, &version); err != nil {
		return fmt.Errorf("probe the server: %w", err)
	}
	if readOnly {
		return errReadOnly
	}
	// An idle session lives wait_timeout: long enough for a heartbeat,
	// short enough that a holder cut off by the network loses its locks on
	// the server in a bounded time. A waiter's is shorter (waitidle.go).
	idle := s.l.cfg.idleTimeout
	if s.waiter {
		idle = min(idle, waiterIdle)
	}
	if err := s.exec(setIdle(idle) + `, SESSION autocommit = 1`); err != nil {
		return fmt.Errorf("configure the session: %w", err)
	}
	for _, p := range []struct {
		stmt **sql.Stmt
		q    string
	}{{&s.beatStmt, sqlBeat}, {&s.lockStmt, sqlLock}, {&s.unlockStmt, sqlUnlock}} {
		st, err := s.prepare(p.q)
		if err != nil {
			return err
		}
		*p.stmt = st
	}
	return nil
}

// exchange runs f under the reply deadline. A deadline that passes makes
// go-sql-driver close the connection: the session is then gone, and the
// error matches errNoReply.
func (s *session) exchange(timeout time.Duration, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(background, timeout)
	defer cancel()
	err := f(ctx)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", errNoReply, timeout)
	}
	return err
}

// scan runs a prepared statement on the session, whose slot the caller
// holds, and checks that it ran on the session's connection: every
// prepared statement's last column is CONNECTION_ID(), dest's last
// element an *int64 for it.
func (s *session) scan(stmt *sql.Stmt, args []any, dest ...any) error {
	err := s.exchange(s.l.cfg.replyTimeout(), func(ctx context.Context) error {
		return stmt.QueryRowContext(ctx, args...).Scan(dest...)
	})
	if err != nil {
		return err
	}
	if id := dest[len(dest)-1].(*int64); *id != s.id {
		return s.switched(*id)
	}
	return nil
}

func (s *session) switched(id int64) error {
	return fmt.Errorf("mysql: the session began on connection %d, a statement ran on connection %d: %w", s.id, id, errMultiplexing)
}

// queryRow is scan for a statement that is not prepared.
func (s *session) queryRow(q string, args []any, dest ...any) error {
	return s.exchange(s.l.cfg.replyTimeout(), func(ctx context.Context) error {
		return s.conn.QueryRowContext(ctx, q, args...).Scan(dest...)
	})
}

// exec runs a statement that returns no rows.
func (s *session) exec(q string, args ...any) error {
	return s.exchange(s.l.cfg.replyTimeout(), func(ctx context.Context) error {
		_, err := s.conn.ExecContext(ctx, q, args...)
		return err
	})
}

func (s *session) prepare(q string) (*sql.Stmt, error) {
	var st *sql.Stmt
	err := s.exchange(s.l.cfg.replyTimeout(), func(ctx context.Context) error {
		var err error
		st, err = s.conn.PrepareContext(ctx, q)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	return st, nil
}

// beat checks that the session is alive, is still the connection it was,
// and holds name (if not empty).
func (s *session) beat(name string) (holds bool, err error) {
	var id int64
	var holder sql.NullInt64
	if err := s.scan(s.beatStmt, []any{name}, &holder, &id); err != nil {
		return false, err
	}
	return holder.Valid && holder.Int64 == s.id, nil
}

func (s *session) tryTake() bool {
	select {
	case s.sem <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *session) give() { <-s.sem }

// discard closes the session's connection without returning it to the
// pool: database/sql discards a connection when Raw's function returns
// sqldriver.ErrBadConn. The server frees the locks it held.
func (s *session) discard() {
	s.conn.Raw(func(any) error { return sqldriver.ErrBadConn })
	s.conn.Close()
}
