package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mutexkit/mutexkit/driver"
)

// Every lock session has application_name "mutexkit <client> <pid> <host>":
// the client's random id, the process id and the host name, cut to the
// server's 63 bytes. An operator sees in pg_stat_activity which process
// holds a backend's locks; Inspect reads the pid and host back.
const appPrefix = "mutexkit "

// maxAppName is the longest application_name the server keeps.
const maxAppName = 63

func newClientID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func appName(client string, pid int, host string) string {
	host = strings.Map(func(r rune) rune {
		if r <= ' ' || r >= 0x7f || r == '\'' || r == '\\' {
			return '_'
		}
		return r
	}, host)
	name := appPrefix + client + " " + strconv.Itoa(pid) + " " + host
	if len(name) > maxAppName {
		name = name[:maxAppName]
	}
	return name
}

// parseAppName reads the pid and, unless it may have been cut, the host.
func parseAppName(name string) (pid int, host string) {
	f := strings.SplitN(strings.TrimPrefix(name, appPrefix), " ", 3)
	if !strings.HasPrefix(name, appPrefix) || len(f) != 3 {
		return 0, ""
	}
	pid, _ = strconv.Atoi(f[1])
	if len(name) < maxAppName {
		host = f[2]
	}
	return pid, host
}

// sqlInspect also tells whether the fencing table is there (in the
// session's search_path, where the fenced statement writes it).
const sqlInspect = `SELECT l.pid, COALESCE(a.application_name, ''), to_regclass('` + FencingTable + `') IS NOT NULL FROM pg_locks l
	LEFT JOIN pg_stat_activity a ON a.pid = l.pid
	WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.mode = 'ExclusiveLock'
	AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND l.classid = $1 AND l.objid = $2`

const sqlInspectFenced = `SELECT token, COALESCE(holder_host, ''), COALESCE(holder_pid, 0), since
	FROM ` + FencingTable + ` WHERE key_id = $1 AND backend_pid = $2`

// Inspect reads pg_locks: whether key is held (by any session, our
// clients' or SQL's), and by whom as far as can be told: the holding
// backend's pid as Session (for pg_terminate_backend), the process id
// and host from the holding session's application_name when it is one of
// ours, and, once a fenced grant has made the fencing table, the token and
// time of the grant (when the holding backend wrote its row).
func (l *locker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	if err := ctx.Err(); err != nil {
		return driver.Holder{}, false, err
	}
	id := KeyID(l.cfg.namespace, key)
	classid, objid := LockTag(id)
	var h driver.Holder
	var held bool
	err := l.onSession(ctx, func(s *session) error {
		h, held = driver.Holder{}, false
		var backend int
		var app string
		var fenced bool
		err := s.queryRow(sqlInspect, []any{int64(classid), int64(objid)}, &backend, &app, &fenced)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err == nil && fenced {
			var tok sql.NullInt64
			var since sql.NullTime
			var host string
			var pid int
			err = s.queryRow(sqlInspectFenced, []any{id, backend}, &tok, &host, &pid, &since)
			switch {
			case err == nil:
				h.Token, h.Since, h.Host, h.PID = uint64(tok.Int64), since.Time, host, pid
			case errors.Is(err, sql.ErrNoRows):
				err = nil
			}
		}
		if err != nil {
			if !sessionSurvives(err) {
				l.kill(s, err)
			}
			return err
		}
		held = true
		h.Session = strconv.Itoa(backend)
		if pid, host := parseAppName(app); pid != 0 {
			h.PID = pid
			if host != "" {
				h.Host = host
			}
		}
		return nil
	})
	if err != nil {
		if !errors.Is(err, ctx.Err()) && !errors.Is(err, driver.ErrClosed) && !errors.Is(err, driver.ErrUnavailable) && !errors.Is(err, driver.ErrInvalid) {
			err = fmt.Errorf("%w: %w", err, failureKind(err))
		}
		return driver.Holder{}, false, redactErr(fmt.Errorf("postgres: inspect: %w", err), l.dsn.password)
	}
	return h, held, nil
}
