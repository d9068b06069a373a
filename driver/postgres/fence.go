package postgres

import (
	"database/sql"
	"fmt"
	"time"

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

// fenceUpsert issues the next token of key $1 to holder $2 (host), $3
// (process id), $4 (time), for the rows of its FROM clause. Tokens
// strictly increase per key: each holder updates the row while it holds
// the lock, and the update commits (durably) before the grant is returned.
const fenceUpsert = `INSERT INTO ` + FencingTable + ` AS f (key_id, token, holder_host, holder_pid, backend_pid, since)
	SELECT $1, 1, $2, $3, pg_backend_pid(), $4 %s
	ON CONFLICT (key_id) DO UPDATE SET token = f.token + 1, holder_host = EXCLUDED.holder_host,
		holder_pid = EXCLUDED.holder_pid, backend_pid = EXCLUDED.backend_pid, since = EXCLUDED.since
	RETURNING f.token`

// sqlFencedLock takes the lock and, only if it got it, the next token, in
// one statement and one round trip. The CTE with the volatile lock call is
// evaluated once.
var sqlFencedLock = `WITH l AS (SELECT pg_try_advisory_lock($1) AS ok),
t AS (` + fmt.Sprintf(fenceUpsert, "FROM l WHERE l.ok") + `)
SELECT l.ok, pg_backend_pid(), (SELECT token FROM t) FROM l`

// sqlFenceToken issues the next token to the holder of a key its session
// already holds: a key kept for a waiter (see wait.go).
var sqlFenceToken = `WITH t AS (` + fmt.Sprintf(fenceUpsert, "") + `)
SELECT true, pg_backend_pid(), (SELECT token FROM t)`

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
		if code := sqlState(err); code != "23505" && code != "42P07" {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("postgres: create the fencing table %s: %w", FencingTable, err)
	}
	l.fenceOK = true
	return nil
}

// fenced runs the fenced lock statement, or with kept sqlFenceToken. The
// caller holds s's slot.
func (s *session) fenced(kept bool, id int64, who driver.Holder, ok *bool, pid *int, token *sql.NullInt64) error {
	q, stmt := sqlFencedLock, &s.fenceStmt
	if kept {
		q, stmt = sqlFenceToken, &s.tokenStmt
	}
	since := who.Since
	if since.IsZero() {
		since = time.Now()
	}
	host := who.Host
	if host == "" {
		host = s.l.host
	}
	procPID := who.PID
	if procPID == 0 {
		procPID = s.l.procPID
	}
	return s.prepared(stmt, q, []any{id, host, procPID, since}, ok, pid, token)
}
