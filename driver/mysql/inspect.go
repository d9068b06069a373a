package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// sqlHolder finds the connection that holds a lock name (the Holder's
// Session: the id KILL CONNECTION takes) and, where they are kept, who
// took it: the fencing table's row when its last fenced grant was made on
// that connection, and the connection's attributes (performance_schema,
// when the server has it on) for its process id and host.
const (
	sqlUsed    = `SELECT IS_USED_LOCK(?)`
	sqlFenceOf = `SELECT token, holder_host, holder_pid, CAST(since AS CHAR) FROM ` + FencingTable + ` WHERE name = ? AND connection_id = ?`
	sqlAttrs   = `SELECT ATTR_NAME, ATTR_VALUE FROM performance_schema.session_connect_attrs
		WHERE PROCESSLIST_ID = ? AND ATTR_NAME IN ('_pid', 'mutexkit_host')`
)

// Inspect reports whether key is held and by whom, as far as the server
// keeps it. Session is the holding connection's id (its CONNECTION_ID()),
// for any holder: IS_USED_LOCK returns it. A key of this client is
// described from what it recorded; a key of another by the fencing table's
// row, if its holder's connection made the last fenced grant of the key,
// and else by its connection's attributes where performance_schema is on.
func (l *locker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	if err := ctx.Err(); err != nil {
		return driver.Holder{}, false, err
	}
	name := l.name(key)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return driver.Holder{}, false, errClosedLocker
	}
	if h := l.held[key]; h != nil && h.s != nil {
		who := driver.Holder{Host: l.host, PID: l.procPID, Since: h.since, Token: h.token, Session: connID(h.s.id)}
		l.mu.Unlock()
		return who, true, nil
	}
	l.mu.Unlock()

	// Not on a lock session: a reply later than the deadline would close
	// it, and free the locks on it.
	qctx, cancel := context.WithTimeout(ctx, l.cfg.replyTimeout())
	defer cancel()
	var conn sql.NullInt64
	err := l.db.QueryRowContext(qctx, sqlUsed, name).Scan(&conn)
	var who driver.Holder
	if err == nil && conn.Valid {
		who, err = l.describe(qctx, name, conn.Int64)
		who.Session = connID(conn.Int64)
	}
	switch {
	case err == nil:
		return who, conn.Valid, nil
	case ctx.Err() != nil:
		return driver.Holder{}, false, fmt.Errorf("mysql: inspect: %w", ctx.Err())
	case qctx.Err() != nil:
		return driver.Holder{}, false, fmt.Errorf("mysql: inspect: %w (%v): %w", errNoReply, l.cfg.replyTimeout(), driver.ErrUnavailable)
	}
	return driver.Holder{}, false, l.fail("inspect", err, name)
}

// describe reads what the server keeps of connection conn, the holder of
// name, on a connection of the pool (no lock session).
func (l *locker) describe(ctx context.Context, name string, conn int64) (driver.Holder, error) {
	var who driver.Holder
	var tok sql.NullInt64
	var host sql.NullString
	var pid sql.NullInt64
	var since sql.NullString
	err := l.db.QueryRowContext(ctx, sqlFenceOf, name, conn).Scan(&tok, &host, &pid, &since)
	switch {
	case err == nil:
		who = driver.Holder{Host: host.String, PID: int(pid.Int64), Token: uint64(tok.Int64)}
		if t, err := time.Parse(sqlTime, since.String); err == nil {
			who.Since = t // written in UTC
		}
		return who, nil
	case errors.Is(err, sql.ErrNoRows), isNoTable(err):
	default:
		return who, err
	}
	rows, err := l.db.QueryContext(ctx, sqlAttrs, conn)
	if err != nil {
		if mysqlNumber(err) != 0 {
			err = nil // no performance_schema here: nothing more is known
		}
		return who, err
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return who, err
		}
		switch k {
		case "_pid":
			who.PID, _ = strconv.Atoi(v)
		case "mutexkit_host":
			who.Host = v
		}
	}
	return who, rows.Err()
}

// connID is a connection id as Holder.Session gives it.
func connID(id int64) string { return strconv.FormatInt(id, 10) }

func isNoTable(err error) bool { return mysqlNumber(err) == 1146 } // ER_NO_SUCH_TABLE

// Ping checks on a lock session that the server answers, is the same
// connection, and is not read-only.
func (l *locker) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := l.onSession(ctx, func(s *session) error {
		var readOnly bool
		var id int64
		err := s.queryRow(`SELECT @@global.read_only, CONNECTION_ID()`, nil, &readOnly, &id)
		switch {
		case err != nil:
			if !sessionSurvives(err) {
				l.kill(s, err)
			}
			return err
		case id != s.id:
			err := s.switched(id)
			l.kill(s, err)
			return err
		case readOnly:
			return errReadOnly
		}
		return nil
	})
	switch {
	case err == nil, errors.Is(err, ctx.Err()), errors.Is(err, driver.ErrClosed):
		return err
	}
	return l.fail("ping", err, "")
}
