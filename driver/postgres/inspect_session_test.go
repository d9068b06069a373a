package postgres_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/mutex"
)

// Inspect's Session is the holding backend's pid, as pg_locks and
// pg_stat_activity show it, for a key of another client and for a lock
// plain SQL holds; and it is the id that ends the holder: terminating
// that backend loses the lease.
func TestInspectSession(t *testing.T) {
	dsn, db := openDB(t)
	ns := t.Name() + strconv.FormatInt(time.Now().UnixNano(), 10)
	a := openClient(t, dsn, ns)
	b := openClient(t, dsn, ns)

	l, err := a.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	h, held, err := b.Inspect(t.Context(), "k")
	if err != nil || !held || h.Session == "" {
		t.Fatalf("Inspect: %+v, %v, %v; want held, with a session", h, held, err)
	}
	classid, objid := postgres.LockTag(postgres.KeyID(ns, "k"))
	var pid int
	var app string
	err = db.QueryRowContext(t.Context(), `SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1 AND l.granted`,
		int64(classid), int64(objid)).Scan(&pid, &app)
	if err != nil {
		t.Fatal(err)
	}
	if h.Session != strconv.Itoa(pid) || !strings.Contains(app, " "+strconv.Itoa(os.Getpid())+" ") {
		t.Fatalf("Inspect says session %q; pg_locks has pid %d (application_name %q)", h.Session, pid, app)
	}
	if own, _, err := a.Inspect(t.Context(), "k"); err != nil || own.Session != h.Session {
		t.Errorf("the holder's own Inspect: session %q, %v; want %q", own.Session, err, h.Session)
	}

	// The operator's use of it: end that backend, and the lease is lost.
	if _, err := db.ExecContext(t.Context(), `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("lease not lost within 10s of pg_terminate_backend(Session)")
	}
	if !errors.Is(l.Err(), mutex.ErrLockLost) {
		t.Errorf("lease ended with %v; want ErrLockLost", l.Err())
	}

	// A lock plain SQL holds: its backend's pg_backend_pid().
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var sqlPID int
	if err := conn.QueryRowContext(t.Context(), `SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock($1)) l`, postgres.KeyID(ns, "sql")).Scan(&sqlPID); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock_all()`)
	if h, held, err := b.Inspect(t.Context(), "sql"); err != nil || !held || h.Session != strconv.Itoa(sqlPID) || h.PID != 0 {
		t.Errorf("Inspect of an SQL lock: %+v, %v, %v; want session %d and no pid", h, held, err, sqlPID)
	}
	if h, held, err := b.Inspect(t.Context(), "free"); err != nil || held || h.Session != "" {
		t.Errorf("Inspect of a free key: %+v, %v, %v; want no session", h, held, err)
	}
}
