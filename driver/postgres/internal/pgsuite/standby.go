package pgsuite

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// ClusterStandbyRefused: a hot standby (pg_is_in_recovery()) grants
// advisory locks that the primary never sees: Connect (through Ping or a
// first TryLock) refuses it with ErrStandby, which matches
// driver.ErrInvalid, with a message that says what to do; the primary
// works.
func ClusterStandbyRefused(t *testing.T, c Client) {
	primary := testserver.StartPGCluster(t, testserver.PGClusterOptions{})
	standby := primary.StartStandby()

	check := func(what string, err error) {
		t.Helper()
		switch {
		case !errors.Is(err, postgres.ErrStandby):
			t.Errorf("%s: %v; want ErrStandby", what, err)
		case !errors.Is(err, driver.ErrInvalid):
			t.Errorf("%s: %v; want it to match driver.ErrInvalid", what, err)
		case !strings.Contains(err.Error(), "hot standby") || !strings.Contains(err.Error(), "connect to the primary"):
			t.Errorf("%s: %v; want a message naming the standby and the fix", what, err)
		}
	}
	check("Ping", ping(t, c, standby.DSN("", nil)))

	mc := open(t, c, standby.DSN("", nil), Namespace(t), nil)
	if _, err := mc.NewMutex("k").TryLock(t.Context()); err == nil {
		t.Error("TryLock on a standby succeeded")
	} else {
		check("TryLock", err)
	}

	admin := primary.AdminDB()
	defer admin.Close()
	if role := LockOnce(t, c, primary.DSN("", nil), admin); role != "postgres" {
		t.Errorf("lock on the primary held by %q", role)
	}
}

// LockOnce takes and releases a key through a client of c on dsn, and
// returns the role of the backend that held it, as seen by admin.
func LockOnce(t *testing.T, c Client, dsn string, admin *sql.DB) (role string) {
	t.Helper()
	ns := Namespace(t)
	mc := open(t, c, dsn, ns, nil)
	lease, err := mc.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	classid, objid := postgres.LockTag(postgres.KeyID(ns, "k"))
	err = admin.QueryRow(`SELECT a.usename FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.classid = $1 AND l.objid = $2 AND l.granted`,
		int64(classid), int64(objid)).Scan(&role)
	if err != nil {
		t.Fatalf("the lock is not in pg_locks: %v", err)
	}
	if err := lease.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	return role
}
