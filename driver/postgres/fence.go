package postgres

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
)

// FencingTable is the table fencing tokens live in, created by the first
// fenced grant (a Mutex with mutex.WithFencing; CREATE TABLE IF NOT
// EXISTS, in the first schema of the session's search_path). One row per
// key id: the last token, and who took it, which Inspect reports. Tokens
// strictly increase per key across its fenced grants; an unfenced grant
// has none and leaves the row alone.
const FencingTable = "mutexkit_fencing"

const sqlFenceTable = `CREATE TABLE IF NOT EXISTS ` + FencingTable + ` (
	key_id      bigint PRIMARY KEY,  -- KeyID(namespace, key)
	token       bigint NOT NULL,     -- the last fencing token issued
	holder_host text,                -- who took it: host name,
	holder_pid  integer,             -- process id,
	backend_pid integer,             -- the server backend of its lock session,
	since       timestamptz          -- and when, by the holder's clock
)`

// fenceCTE is the part of a fenced acquire statement (see lockSQL) that
// issues the next token, only if the lock CTE l took the key, in the same
// statement and round trip; $p, $p+1, $p+2 are the holder's host, process
// id and time. Tokens strictly increase per key: each holder updates the
// row while it holds the lock, and the update commits (durably) before the
// grant is returned.
func fenceCTE(p int) string {
	n := func(i int) string { return "$" + strconv.Itoa(p+i) }
	return `t AS (
	INSERT INTO ` + FencingTable + ` AS f (key_id, token, holder_host, holder_pid, backend_pid, since)
	SELECT $1, 1, ` + n(0) + `, ` + n(1) + `, pg_backend_pid(), ` + n(2) + ` FROM l WHERE l.ok
	ON CONFLICT (key_id) DO UPDATE SET token = f.token + 1, holder_host = EXCLUDED.holder_host,
		holder_pid = EXCLUDED.holder_pid, backend_pid = EXCLUDED.backend_pid, since = EXCLUDED.since
	RETURNING f.token
)`
}

// ensureFenceTable creates the fencing table once per locker. s's slot is
// held by the caller.
func (l *locker) ensureFenceTable(s *session) error {
	l.fenceMu.Lock()
	defer l.fenceMu.Unlock()
	if l.fenceOK {
		return nil
	}
	var err error
	for range 3 {
		err = s.exec(sqlFenceTable)
		// Two clients creating it at once can collide on the catalog even
		// with IF NOT EXISTS: the table is there then, so try again.
		if pe, ok := errors.AsType[*pq.Error](err); !ok || (pe.Code != "23505" && pe.Code != "42P07") {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("postgres: create the fencing table %s: %w", FencingTable, err)
	}
	l.fenceOK = true
	return nil
}

// fenceArgs are the holder's host, process id and time, for fenceCTE.
func (l *locker) fenceArgs(who driver.Holder) []any {
	since := who.Since
	if since.IsZero() {
		since = time.Now()
	}
	host := who.Host
	if host == "" {
		host = l.host
	}
	procPID := who.PID
	if procPID == 0 {
		procPID = l.procPID
	}
	return []any{host, procPID, since}
}
