package mysql_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/mysql"
	"github.com/mutexkit/mutexkit/mutex"
)

// Inspect's Session is the holding connection's id, as the server tells
// it (IS_USED_LOCK, the process list), for the holder's own client, for
// another client, and for a lock plain SQL holds (its CONNECTION_ID()); and
// it is the id that ends the holder: KILL CONNECTION of it loses the lease.
func TestInspectSession(t *testing.T) {
	dsn, admin := testDSN(t)
	ns := uniqueNamespace(t)
	a := openClient(t, dsn, ns)
	b := openClient(t, dsn, ns)

	l, err := a.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	conn := holderOf(t, admin, mysql.LockName(ns, "k"))
	var listed int
	if err := admin.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?`, conn).Scan(&listed); err != nil || conn == 0 || listed != 1 {
		t.Fatalf("the holding connection %d in the process list: %d, %v", conn, listed, err)
	}
	want := strconv.FormatInt(conn, 10)
	for name, c := range map[string]*mutex.Client{"own": a, "other": b} {
		h, held, err := c.Inspect(t.Context(), "k")
		if err != nil || !held || h.Session != want {
			t.Errorf("%s client's Inspect: %+v, %v, %v; want session %s", name, h, held, err, want)
		}
	}

	// The operator's use of it: end that connection, and the lease is lost.
	if _, err := admin.ExecContext(t.Context(), `KILL CONNECTION `+want); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("lease not lost within 10s of KILL CONNECTION Session")
	}
	if !errors.Is(l.Err(), mutex.ErrLockLost) {
		t.Errorf("lease ended with %v; want ErrLockLost", l.Err())
	}

	// A lock plain SQL holds: its connection's CONNECTION_ID().
	sc, err := admin.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	var got, id int64
	if err := sc.QueryRowContext(t.Context(), `SELECT GET_LOCK((`+mysql.LockNameSQL+`), 0), CONNECTION_ID()`, ns, "sql").Scan(&got, &id); err != nil || got != 1 {
		t.Fatalf("SQL GET_LOCK: %d, %v", got, err)
	}
	defer sc.ExecContext(t.Context(), `DO RELEASE_ALL_LOCKS()`)
	if h, held, err := b.Inspect(t.Context(), "sql"); err != nil || !held || h.Session != strconv.FormatInt(id, 10) {
		t.Errorf("Inspect of an SQL lock: %+v, %v, %v; want session %d", h, held, err, id)
	}
	if h, held, err := b.Inspect(t.Context(), "free"); err != nil || held || h.Session != "" {
		t.Errorf("Inspect of a free key: %+v, %v, %v; want no session", h, held, err)
	}
}
