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

const sqlInspect = `SELECT l.pid, COALESCE(a.application_name, '') FROM pg_locks l
	LEFT JOIN pg_stat_activity a ON a.pid = l.pid
	WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.mode = 'ExclusiveLock'
	AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND l.classid = $1 AND l.objid = $2`

const sqlInspectFenced = `SELECT token, COALESCE(holder_host, ''), COALESCE(holder_pid, 0), since
	FROM ` + FencingTable + ` WHERE key_id = $1 AND backend_pid = $2`

// Inspect reads pg_locks: whether key is held (by any session, our
// clients' or SQL's), and by whom as far as can be told: the process id
// and host from the holding session's application_name when it is one of
// ours, and with fencing on the token and time of the grant from the
// fencing table (when its row was written by the holding backend).
func (l *locker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	if err := ctx.Err(); err != nil {
		return driver.Holder{}, false, err
	}
	if key == "" {
		return driver.Holder{}, false, fmt.Errorf("postgres: empty key: %w", driver.ErrInvalid)
	}
	id := KeyID(l.cfg.namespace, key)
	classid, objid := LockTag(id)
	s, err := l.session(ctx)
	if err != nil {
		return driver.Holder{}, false, err
	}
	defer s.give()
	var h driver.Holder
	var backend int
	var app string
	err = s.queryRow(sqlInspect, []any{int64(classid), int64(objid)}, &backend, &app)
	if errors.Is(err, sql.ErrNoRows) {
		return driver.Holder{}, false, nil
	}
	if err == nil && l.cfg.fencing {
		if err = l.ensureFenceTable(s); err == nil {
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
	}
	if err != nil {
		if !sessionSurvives(err) {
			l.kill(s, err)
		}
		return driver.Holder{}, false, fmt.Errorf("postgres: inspect: %w: %w", err, failureKind(err))
	}
	if pid, host := parseAppName(app); pid != 0 {
		h.PID = pid
		if host != "" {
			h.Host = host
		}
	}
	return h, true, nil
}
