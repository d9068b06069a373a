package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
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
// lock_timeout instead.
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

	lastOK   atomic.Int64 // l.now() after the last successful statement
	inflight atomic.Int64 // l.now() when the running statement began; 0: none

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
	l.dialMu.Lock()
	defer l.dialMu.Unlock()
	if l.dialer != nil {
		l.dialer.take()
	}
	conn, err := l.db.Conn(ctx)
	if err != nil {
		return nil, l.connectError(err)
	}
	s := &session{
		l:    l,
		conn: conn,
		sem:  make(chan struct{}, 1),
		stop: make(chan struct{}),
		keys: make(map[string]*hold),
	}
	if l.dialer != nil {
		s.netConn = l.dialer.take()
	}
	if err := s.init(); err != nil {
		s.discard()
		return nil, l.connectError(txPoolingErr(err))
	}
	return s, nil
}

func (s *session) init() error {
	l := s.l
	var recovery bool
	var version int
	var lockTable int64
	if err := s.conn.QueryRowContext(background, sqlProbe).Scan(&s.pid, &recovery, &version, &lockTable); err != nil {
		return fmt.Errorf("postgres: probe the server: %w", err)
	}
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
	rows, err := s.conn.QueryContext(background, q, ms(c.stmtTimeout), l.appName, s.mark,
		secs(c.keepIdle), secs(c.keepIntvl), strconv.Itoa(c.keepCount), ms(c.keepIdle+c.keepIntvl*time.Duration(c.keepCount)))
	if err == nil {
		err = rows.Close()
	}
	if err != nil {
		return fmt.Errorf("postgres: configure the session: %w", err)
	}
	for _, p := range []struct {
		stmt **sql.Stmt
		q    string
	}{{&s.beatStmt, sqlBeat}, {&s.lockStmt, sqlLock}, {&s.unlockStmt, sqlUnlock}} {
		if *p.stmt, err = s.conn.PrepareContext(background, p.q); err != nil {
			return fmt.Errorf("postgres: prepare: %w", err)
		}
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

// scan runs a statement on the session. The caller holds sem.
func (s *session) scan(stmt *sql.Stmt, args []any, dest ...any) error {
	s.inflight.Store(s.l.now())
	err := txPoolingErr(stmt.QueryRowContext(background, args...).Scan(dest...))
	s.inflight.Store(0)
	if err == nil {
		s.lastOK.Store(s.l.now())
	}
	return err
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
// statement that gets no reply for the statement timeout plus two
// intervals means the network or server is gone: the session is given up.
func (s *session) heartbeat() {
	l := s.l
	defer l.wg.Done()
	iv := l.cfg.heartbeat
	stuckAfter := int64(l.cfg.stmtTimeout + 2*iv)
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := l.now()
		if began := s.inflight.Load(); began != 0 && now-began > stuckAfter {
			l.kill(s, fmt.Errorf("postgres: no reply from backend %d for %v: %w", s.pid, time.Duration(now-began).Round(time.Millisecond), errSessionGone))
			return
		}
		if now-s.lastOK.Load() < int64(iv/2) {
			continue // a statement just proved the session alive
		}
		if !s.tryTake() {
			continue // busy: the statement in flight will tell, or the check above
		}
		err := s.beat()
		s.give()
		if err != nil && (!sessionSurvives(err) || isTxPooling(err)) {
			l.kill(s, err)
			return
		}
	}
}
