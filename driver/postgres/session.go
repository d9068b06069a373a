package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	mdriver "github.com/mutexkit/mutexkit/driver"
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
	netConn net.Conn // the socket, when this driver dialed it; else nil
	pid     int      // backend pid
	mark    string   // this session's value of mutexkit.session

	sem  chan struct{} // held while a statement runs
	stop chan struct{} // closed when the session is killed

	lockStmt, unlockStmt, beatStmt *sql.Stmt
	fenceStmt                      *sql.Stmt // prepared on first use; guarded by sem

	lastOK atomic.Int64 // l.now() after the last successful statement

	// Guarded by l.mu.
	dead bool
	keys map[string]*hold
}

// The statements of a lock session. Each returns pg_backend_pid() so a
// change of backend between statements (a transaction-pooling proxy) is
// seen at once, for free.
const (
	sqlLock = `SELECT pg_try_advisory_lock($1), pg_backend_pid()`
	// The NOTIFY, sent only when some client holds the key's interest tag
	// (see listen.go), goes out when the statement commits, after the
	// unlock: one round trip wakes every waiting client.
	sqlUnlock = `SELECT pg_advisory_unlock($1), pg_backend_pid(),
		CASE WHEN pg_try_advisory_xact_lock($3, $4) THEN NULL ELSE pg_notify('` + notifyChannel + `', $2) END`
	sqlBeat  = `SELECT pg_backend_pid(), current_setting('mutexkit.session', true)`
	sqlProbe = `SELECT pg_backend_pid(), pg_is_in_recovery(), current_setting('server_version_num')::int,
		current_setting('max_locks_per_transaction')::bigint *
		(current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint)`
)

// background is the context of every statement on a lock session: see
// session.
var background = context.Background()

// openSession opens a new lock session: a dedicated connection, checked
// (not a standby, no transaction pooler) and configured.
func (l *locker) openSession(ctx context.Context) (*session, error) {
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
		return c, nil, err
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
	if err := s.queryRow(sqlProbe, nil, &pid, &recovery, &version, &lockTable); err != nil {
		return fmt.Errorf("postgres: probe the server: %w", err)
	}
	s.pid = pid
	if recovery {
		return errStandby
	}
	if version < 120000 {
		return fmt.Errorf("postgres: server version %d is older than 12: %w", version, mdriver.ErrUnimplemented)
	}
	var b [8]byte
	rand.Read(b[:])
	s.mark = hex.EncodeToString(b[:])
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	secs := func(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }
	c := l.cfg
	q := `SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $1, false),
		set_config('application_name', $2, false), set_config('mutexkit.session', $3, false),
		set_config('tcp_keepalives_idle', $4, false), set_config('tcp_keepalives_interval', $5, false),
		set_config('tcp_keepalives_count', $6, false), set_config('tcp_user_timeout', $7, false),
		set_config('idle_in_transaction_session_timeout', '0', false)`
	if version >= 140000 {
		// A server-wide idle_session_timeout would kill an idle lock
		// session, and its locks with it.
		q += `, set_config('idle_session_timeout', '0', false)`
	}
	err := s.exchange(func() error {
		rows, err := s.conn.QueryContext(background, q, ms(c.stmtTimeout), l.appName, s.mark,
			secs(c.keepIdle), secs(c.keepIntvl), strconv.Itoa(c.keepCount), ms(c.keepIdle+c.keepIntvl*time.Duration(c.keepCount)))
		if err == nil {
			err = rows.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: configure the session: %w", err)
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
// nil.
func (s *session) scan(stmt *sql.Stmt, args []any, dest ...any) error {
	err := txPoolingErr(s.exchange(func() error {
		return stmt.QueryRowContext(background, args...).Scan(dest...)
	}))
	if err == nil {
		s.lastOK.Store(s.l.now())
	}
	return err
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
	if pid != s.pid || !markOK {
		return fmt.Errorf("postgres: session began on backend %d, a statement ran on backend %d: %w", s.pid, pid, errTxPooling)
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
// driver.ErrBadConn. A statement still in flight delays it; closing the
// socket first (when this driver dialed it) ends that statement.
func (s *session) discard() {
	s.conn.Raw(func(any) error { return driver.ErrBadConn })
}

// heartbeat checks the session every interval, so a session killed on the
// server (pg_terminate_backend, a restart, an idle killer) is reported lost
// within about two intervals, without waiting for the next command. A
// server that stops answering is given up when the check (or any other
// statement) misses the reply deadline: within the statement timeout plus
// two intervals of its last reply.
func (s *session) heartbeat() {
	l := s.l
	defer l.wg.Done()
	iv := l.cfg.heartbeat
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if l.now()-s.lastOK.Load() < int64(iv/2) {
			continue // a statement just proved the session alive
		}
		if !s.tryTake() {
			continue // busy: the statement in flight has its own deadline
		}
		select {
		case <-s.stop: // given up while we took the slot
			s.give()
			return
		default:
		}
		err := s.beat()
		s.give()
		if err != nil && (!sessionSurvives(err) || isTxPooling(err)) {
			l.kill(s, err)
			return
		}
	}
}
