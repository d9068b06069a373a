package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// FencingTable is the table fencing tokens live in, created by the first
// fenced grant (a Mutex with mutex.WithFencing; CREATE TABLE IF NOT
// EXISTS, InnoDB, in the DSN's database). One row per lock name: the last
// token, and who took it, which Inspect reports. Tokens strictly increase
// per key across its fenced grants, for as long as the row is kept: each
// is written, and committed, by the holder of the lock before the grant
// is returned. An unfenced grant has none and leaves the row alone.
const FencingTable = "mutexkit_fencing"

const sqlFenceTable = `CREATE TABLE IF NOT EXISTS ` + FencingTable + ` (
	name          VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY, -- LockName(namespace, key)
	token         BIGINT UNSIGNED NOT NULL,  -- the last fencing token issued
	holder_host   VARCHAR(255),              -- who took it: host name,
	holder_pid    INT,                       -- process id,
	connection_id BIGINT UNSIGNED,           -- the server connection of its lock session,
	since         DATETIME(6)                -- and when, by the holder's clock (UTC)
) ENGINE=InnoDB`

// sqlFence takes the next token: LAST_INSERT_ID(expr) hands it back in the
// statement's reply, so the write and the read are one round trip.
const sqlFence = `INSERT INTO ` + FencingTable + ` (name, token, holder_host, holder_pid, connection_id, since)
	VALUES (?, LAST_INSERT_ID(1), ?, ?, CONNECTION_ID(), ?)
	ON DUPLICATE KEY UPDATE token = LAST_INSERT_ID(token + 1), holder_host = VALUES(holder_host),
		holder_pid = VALUES(holder_pid), connection_id = VALUES(connection_id), since = VALUES(since)`

// sqlTime is how since is written and read: UTC, whatever the
// connection's time zone or go-sql-driver's parseTime and loc.
const sqlTime = "2006-01-02 15:04:05.999999"

// fence takes h's next token on s, which holds h's lock and whose slot the
// caller holds.
func (l *locker) fence(s *session, h *hold, who driver.Holder) (uint64, error) {
	if err := l.ensureFenceTable(s); err != nil {
		return 0, err
	}
	if s.fenceStmt == nil {
		st, err := s.prepare(sqlFence)
		if err != nil {
			return 0, l.fail("fencing token", err, h.name)
		}
		s.fenceStmt = st
	}
	since := who.Since
	if since.IsZero() {
		since = time.Now()
	}
	host, pid := who.Host, who.PID
	if host == "" {
		host = l.host
	}
	if pid == 0 {
		pid = l.procPID
	}
	var res sql.Result
	err := s.exchange(l.cfg.replyTimeout(), func(ctx context.Context) error {
		var err error
		res, err = s.fenceStmt.ExecContext(ctx, h.name, host, pid, since.UTC().Format(sqlTime))
		return err
	})
	if err == nil {
		var tok int64
		if tok, err = res.LastInsertId(); err == nil {
			if tok <= 0 {
				return 0, fmt.Errorf("mysql: fencing token: the server returned %d: %w", tok, driver.ErrUnavailable)
			}
			return uint64(tok), nil
		}
	}
	if !sessionSurvives(err) {
		l.kill(s, err)
	}
	return 0, l.fail("fencing token", err, h.name)
}

// ensureFenceTable creates the fencing table once per locker.
func (l *locker) ensureFenceTable(s *session) error {
	l.fenceMu.Lock()
	defer l.fenceMu.Unlock()
	if l.fenceOK {
		return nil
	}
	if err := s.exec(sqlFenceTable); err != nil {
		if !sessionSurvives(err) {
			l.kill(s, err)
		}
		return l.fail("create the fencing table "+FencingTable, err, "")
	}
	l.fenceOK = true
	return nil
}
