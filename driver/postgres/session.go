package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	sqldriver "database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// session is one server connection that holds locks: a *sql.Conn that is
// never handed back to a pool (it is discarded when done, since it may hold
// locks and carries this driver's settings). Statements on it run one at a
// time (sem), never with a caller's context: lib/pq cancels a statement
// whose context ends by closing the connection, which would drop every
// lock on it. They are bounded on the server by statement_timeout and
// lock_timeout instead, and every wait for a reply by the reply deadline
// (see exchange).
type session struct {
	l       *locker
	conn    *sql.Conn
	netConn net.Conn     // the socket, when this driver dialed it or a module's pool gives it (FromPool); else nil
	pid     int          // backend pid
	started sql.NullTime // the backend's start, to tell it from a later one with its pid
	mark    string       // this session's value of mutexkit.session

	sem  chan struct{} // held while a statement runs
	stop chan struct{} // closed when the session is killed

	lockStmt, unlockStmt, beatStmt *sql.Stmt // a waiter session has waitStmt for lockStmt
	waitStmt                       *sql.Stmt
	fenceStmt, tokenStmt           *sql.Stmt // prepared on first use, as are the two below; guarded by sem
	queuedStmt, endStmt            *sql.Stmt // a lock session's, about a waiter session (see wait.go)
	holdsStmt, clearStmt           *sql.Stmt // a waiter session's, about itself (see wait.go)

	waiter bool // a waiter session (wait.go), never in the pool

	lastOK atomic.Int64 // l.now() as the last successful prepared statement was sent

	// Guarded by l.mu.
	inUse bool // a waiter session that waits or holds a key: counted in l.waiters
	dead  bool
	cause error // why it was given up; nil: by Close
	keys  map[string]*hold
}

// The statements of a lock session. Each returns pg_backend_pid() so a
// change of backend between statements (a transaction-pooling proxy) is
// seen at once, for free.
const (
	sqlLock   = `SELECT pg_try_advisory_lock($1), pg_backend_pid()`
	sqlUnlock = `SELECT pg_advisory_unlock($1), pg_backend_pid()`
	sqlBeat   = `SELECT pg_backend_pid(), current_setting('mutexkit.session', true)`
	sqlProbe  = `SELECT pg_backend_pid(), (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
		pg_is_in_recovery(), current_setting('server_version_num')::int,
		current_setting('max_locks_per_transaction')::bigint *
		(current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint)`
)

// background is the context of every statement on a lock session: see
// session.
var background = context.Background()

// openSession opens a new lock session, or with waiter a waiter session
// (see wait.go): a dedicated connection, checked (not a standby, no
// transaction pooler) and configured.
func (l *locker) openSession(ctx context.Context, waiter bool) (*session, error) {
	conn, netConn, err := l.dial(ctx)
	if err != nil {
		return nil, l.connectError(err)
	}
	s := &session{
		l:       l,
		conn:    conn,
		netConn: netConn,
		sem:     make(chan struct{}, 1),
		stop:    make(chan struct{}),
		keys:    make(map[string]*hold),
		waiter:  waiter,
	}
	if err := s.init(); err != nil {
		if !errors.Is(err, errNoReply) { // else already given up
			s.discard()
		}
		return nil, l.connectError(txPoolingErr(err))
	}
	return s, nil
}

// dial takes a new connection and, when this driver dialed it, its socket.
func (l *locker) dial(ctx context.Context) (*sql.Conn, net.Conn, error) {
	if l.dialer == nil {
		c, err := l.conn(ctx)
		if err != nil {
			return nil, nil, err
		}
		if !l.ownDB && isPgxStdlib(c) { // FromDB: nothing ran on c yet
			c.Close()
			return nil, nil, errPgxStdlib
		}
		return c, socketOf(c), nil
	}
	// One dial at a time, so that the socket the dialer remembers is this
	// connection's: sessions are never pooled (SetMaxIdleConns(0)), so
	// every Conn dials.
	l.dialMu.Lock()
	defer l.dialMu.Unlock()
	l.dialer.take()
	c, err := l.conn(ctx)
	return c, l.dialer.take(), err
}

func (s *session) init() error {
	l := s.l
	var pid int
	var recovery bool
	var version int
	var lockTable int64
	var started sql.NullTime
	if err := s.queryRow(sqlProbe, nil, &pid, &started, &recovery, &version, &lockTable); err != nil {
		return fmt.Errorf("postgres: probe the server: %w", err)
	}
	s.pid, s.started = pid, started
	if recovery {
		return errStandby
	}
	if version < 120000 {
		return fmt.Errorf("postgres: server version %d is older than 12: %w", version, driver.ErrUnimplemented)
	}
	var b [8]byte
	rand.Read(b[:])
	s.mark = hex.EncodeToString(b[:])
	secs := func(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }
	c := l.cfg
	q := `SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $8, false),
		set_config('application_name', $2, false), set_config('mutexkit.session', $3, false),
		set_config('tcp_keepalives_idle', $4, false), set_config('tcp_keepalives_interval', $5, false),
		set_config('tcp_keepalives_count', $6, false), set_config('tcp_user_timeout', $7, false),
		set_config('idle_in_transaction_session_timeout', '0', false)`
	if version >= 140000 {
		// A server-wide idle_session_timeout would kill an idle lock
		// session, and its locks with it.
		q += `, set_config('idle_session_timeout', '0', false)`
	}
	stmtTimeout, lockTimeout := c.holdTimeouts()
	if s.waiter {
		// Its wait in the server is bounded by lock_timeout (see wait.go),
		// which statement_timeout must not cut short.
		stmtTimeout, lockTimeout = c.waitTimeouts()
		if version >= 140000 {
			// A waiter whose client is gone (its process died) leaves the
			// server's queue within a second, instead of when it comes
			// first (then it is granted the key, and frees it as it
			// finds its client gone).
			q += `, set_config('client_connection_check_interval', '1000', false)`
		}
	}
	err := s.exchange(func() error {
		rows, err := s.conn.QueryContext(background, q, stmtTimeout, l.appName, s.mark,
			secs(c.keepIdle), secs(c.keepIntvl), strconv.Itoa(c.keepCount), msString(c.keepIdle+c.keepIntvl*time.Duration(c.keepCount)),
			lockTimeout)
		if err == nil {
			err = rows.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: configure the session: %w", err)
	}
	lock, lockQ, unlockQ := &s.lockStmt, sqlLock, sqlUnlock
	if s.waiter {
		lock, lockQ, unlockQ = &s.waitStmt, sqlWait, sqlWaiterUnlock
	}
	for _, p := range []struct {
		stmt **sql.Stmt
		q    string
	}{{&s.beatStmt, sqlBeat}, {&s.unlockStmt, unlockQ}, {lock, lockQ}} {
		st, err := s.prepare(p.q)
		if err != nil {
			return err
		}
		*p.stmt = st
	}
	// Behind a transaction pooler the settings above stayed on some other
	// server connection: this is where that shows, if the proxy switched.
	if err := s.beat(); err != nil {
		return err
	}
	l.mu.Lock()
	if l.lockTable == 0 {
		l.lockTable = lockTable
	}
	l.mu.Unlock()
	return nil
}

// scan runs a prepared statement on the session, within the reply
// deadline. The caller holds sem; it reads dest only when scan returns
// nil. Every prepared statement returns the backend's pid, which the
// caller checks (checkPID) or gives the session up.
func (s *session) scan(stmt *sql.Stmt, args []any, dest ...any) error {
	sent := s.l.now()
	err := txPoolingErr(s.exchange(func() error {
		return stmt.QueryRowContext(background, args...).Scan(dest...)
	}))
	if err == nil {
		s.lastOK.Store(sent)
	}
	return err
}

// prepared is scan for q, prepared on first use into *st.
func (s *session) prepared(st **sql.Stmt, q string, args []any, dest ...any) error {
	if *st == nil {
		p, err := s.prepare(q)
		if err != nil {
			return txPoolingErr(err)
		}
		*st = p
	}
	return s.scan(*st, args, dest...)
}

// queryRow is scan for a statement that is not prepared.
func (s *session) queryRow(q string, args []any, dest ...any) error {
	return txPoolingErr(s.exchange(func() error {
		return s.conn.QueryRowContext(background, q, args...).Scan(dest...)
	}))
}

// exec runs a statement that returns no rows, within the reply deadline.
func (s *session) exec(q string) error {
	return s.exchange(func() error {
		_, err := s.conn.ExecContext(background, q)
		return err
	})
}

// prepare prepares a statement on the session, within the reply deadline.
func (s *session) prepare(q string) (*sql.Stmt, error) {
	var st *sql.Stmt
	err := s.exchange(func() error {
		var err error
		st, err = s.conn.PrepareContext(background, q)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: prepare: %w", err)
	}
	return st, nil
}

// beat checks that the session is alive and is still the backend it was.
// The caller holds sem (or owns the session alone).
func (s *session) beat() error {
	var pid int
	var mark sql.NullString
	if err := s.scan(s.beatStmt, nil, &pid, &mark); err != nil {
		return err
	}
	return s.checkPID(pid, mark.String == s.mark)
}

func (s *session) checkPID(pid int, markOK bool) error {
	switch {
	case pid != s.pid:
		return fmt.Errorf("postgres: session began on backend %d, a statement ran on backend %d: %w", s.pid, pid, errTxPooling)
	case !markOK:
		// Same pid, but another client's session set the setting there.
		return fmt.Errorf("postgres: session's setting mutexkit.session changed on backend %d, as another session set it there: %w", s.pid, errTxPooling)
	}
	return nil
}

// tryTake takes the session's statement slot if it is free.
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
// sqldriver.ErrBadConn. A statement still in flight delays it; closing the
// socket first (when this driver dialed it) ends that statement.
func (s *session) discard() {
	s.conn.Raw(func(any) error { return sqldriver.ErrBadConn })
}

// The pool: a locker's sessions, shared by its held keys.

// addSessionLocked adds s to the pool. Callers hold l.mu.
func (l *locker) addSessionLocked(s *session) {
	l.sessions = append(l.sessions, s)
	close(l.changed)
	l.changed = make(chan struct{})
}

// session returns a live session with its statement slot taken: a free
// one, a new one while there are fewer than MaxSessions, or else the next
// in turn once it is free. Waiting honours ctx: nothing is at stake yet.
func (l *locker) session(ctx context.Context) (*session, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, errClosedLock
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
				return nil, errClosedLock
			}
			s.tryTake() // new: free
			l.addSessionLocked(s)
			l.mu.Unlock()
			return s, nil
		}
		changed := l.changed
		var s *session
		if n > 0 {
			s = l.sessions[l.rr%n]
			l.rr++
		}
		l.mu.Unlock()
		var sem chan struct{}
		var stop chan struct{}
		if s != nil {
			sem, stop = s.sem, s.stop
		}
		select {
		case sem <- struct{}{}: // nil when there is no session: never ready
			l.mu.Lock()
			dead := s.dead
			l.mu.Unlock()
			if !dead {
				return s, nil
			}
			s.give()
		case <-stop:
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.closing:
			return nil, errClosedLock
		}
	}
}

// onSession runs f on a session whose slot it holds, then frees the slot.
// When f finds the session dead (its connection closed or its backend
// ended while it sat idle: a server restart, an idle killer) and gives it
// up, f runs once more on a fresh one, as database/sql retries a
// connection that went bad in the pool: nothing f asked for was done on
// the dead one. Waiting for a session honours ctx; f is never cancelled.
func (l *locker) onSession(ctx context.Context, f func(s *session) error) error {
	for try := 0; ; try++ {
		s, err := l.session(ctx)
		if err != nil {
			return err
		}
		err = f(s)
		s.give()
		if err == nil || try > 0 || !connGone(err) || !l.isDead(s) {
			return err
		}
	}
}

// ask runs q, prepared on first use into the statement stmt picks, on a
// lock session; q's last column is the backend pid, which it checks. A
// session that fails is given up.
func (l *locker) ask(ctx context.Context, stmt func(*session) **sql.Stmt, q string, args []any, dest ...any) error {
	return l.onSession(ctx, func(s *session) error {
		var pid int
		err := s.prepared(stmt(s), q, args, append(dest, &pid)...)
		if err == nil {
			err = s.checkPID(pid, true)
		}
		if err != nil && (!sessionSurvives(err) || isTxPooling(err)) {
			l.kill(s, err)
		}
		return err
	})
}

// isDead reports whether s was given up.
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
	s.dead, s.cause = true, cause
	l.sessions = slices.DeleteFunc(l.sessions, func(x *session) bool { return x == s })
	if s.waiter {
		delete(l.wsess, s)
		l.idle = slices.DeleteFunc(l.idle, func(x *session) bool { return x == s })
		if s.inUse {
			s.inUse = false
			l.waiters--
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
	l.mu.Unlock()

	if s.netConn != nil {
		s.netConn.Close() // ends a statement in flight at once
	}
	// Close discards the sessions it finds (and marks them dead first, so
	// they never get here); this one is not among them.
	go s.discard() // may wait for a statement in flight
	what := "ended, so the server freed the lock and may have granted it to another holder already"
	switch {
	case errors.Is(cause, errNoReply):
		what = "was given up, since the server stopped answering; the server frees the lock when it sees the connection closed, and may have freed it and granted it to another holder already"
	case isTxPooling(cause):
		// The proxy keeps the backend, and the lock on it, for its other
		// clients: nothing here can release it.
		what = "was given up: its statements reached other backends, so the lock may stay held by the proxy's server connection (until the proxy closes it) or be freed and granted to another holder"
	}
	for _, h := range lost {
		if h.onLost != nil {
			h.onLost(fmt.Errorf("postgres: the session (backend pid %d) that held the lock %s: %w: %w", s.pid, what, cause, driver.ErrNotHeld))
		}
	}
}
