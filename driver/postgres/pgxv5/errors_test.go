package pgxv5_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/pgxv5"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// A statement that the server ends at its statement or lock timeout is a
// reply (pgx's *pgconn.PgError, severity ERROR): the attempt fails, and
// the session and the other lease on it stay. Without the classification
// of pgx's errors the session would be given up and "held" lost.
func TestStatementTimeoutKeepsSession(t *testing.T) {
	dsn := testserver.PostgresDSN(t)
	admin := openAdmin(t, dsn)
	ns := uniqueNamespace(t)
	mc := openClient(t, newPool(t, dsn, 8), ns, postgres.WithStatementTimeout(300*time.Millisecond))
	held, err := mc.NewMutex("held").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pid := holderPID(t, admin, ns, "held")
	blockFencedAcquire(t, admin, mc, ns, "slow")

	_, err = mc.NewMutex("slow", mutex.WithFencing()).TryLock(t.Context())
	pe, ok := errors.AsType[*pgconn.PgError](err)
	if !ok || (pe.Code != "55P03" && pe.Code != "57014") {
		t.Fatalf("TryLock blocked on the server: %v; want pgx's lock or statement timeout (55P03, 57014)", err)
	}
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Errorf("TryLock: %v; want driver.ErrUnavailable", err)
	}
	t.Logf("TryLock: %v", err)
	if err := held.Err(); err != nil {
		t.Fatalf("the other lease: %v", err)
	}
	if got := holderPID(t, admin, ns, "held"); got != pid {
		t.Fatalf("held key on backend %d, was %d", got, pid)
	}
	if got := holderPID(t, admin, ns, "slow"); got != 0 {
		t.Fatalf("the failed attempt left \"slow\" held by %d", got)
	}
	if err := held.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock on the session after the timeout: %v", err)
	}
}

// A backend ended on the server (pg_terminate_backend: FATAL, then the
// connection closes) loses every lease on its session, reported as
// mutex.ErrLockLost; the client goes on with another pool connection.
func TestTerminatedBackendLosesLeases(t *testing.T) {
	dsn := testserver.PostgresDSN(t)
	admin := openAdmin(t, dsn)
	ns := uniqueNamespace(t)
	mc := openClient(t, newPool(t, dsn, 8), ns)
	var leases []*mutex.Lease
	for _, k := range []string{"k0", "k1", "k2"} {
		l, err := mc.NewMutex(k).TryLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	pid := holderPID(t, admin, ns, "k0")
	if _, err := admin.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		select {
		case <-l.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: loss not reported", l.Key())
		}
		if !errors.Is(l.Err(), mutex.ErrLockLost) {
			t.Fatalf("%s: Err = %v; want ErrLockLost", l.Key(), l.Err())
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	l, err := mc.NewMutex("k0").Lock(ctx) // the dying backend frees its locks as it exits
	if err != nil {
		t.Fatalf("Lock after the loss: %v", err)
	}
	if got := holderPID(t, admin, ns, "k0"); got == pid || got == 0 {
		t.Fatalf("k0 held by backend %d after the kill of %d", got, pid)
	}
	l.Unlock(t.Context())
}

// The server's refusals are driver.ErrDenied (not an outage to wait out),
// with the server's reason, and never carry the password: a wrong password
// (scram-sha-256 on a private server) and an unknown database.
func TestRefusedPool(t *testing.T) {
	pg := testserver.StartPGCluster(t, testserver.PGClusterOptions{Password: true})
	const wrong = "Wr0ng-p4ss;word'x"
	u, _ := url.Parse(pg.DSN("", nil))
	u.User = url.UserPassword(pg.User, wrong)
	unknownDB, _ := url.Parse(pg.DSN("", nil))
	unknownDB.Path = "/mk_nosuchdb"
	for _, c := range []struct{ name, dsn, want string }{
		{"wrong password", u.String(), "password authentication failed"},
		{"unknown database", unknownDB.String(), `database "mk_nosuchdb" does not exist`},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			cfg, err := pgxpool.ParseConfig(c.dsn)
			if err != nil {
				t.Fatal(err)
			}
			pool, err := pgxpool.NewWithConfig(t.Context(), cfg) // lazy: no connection yet
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			_, err = pgxv5.FromPool(pool).Connect(t.Context())
			switch {
			case err == nil:
				t.Fatal("Connect succeeded")
			case !strings.Contains(err.Error(), c.want):
				t.Errorf("Connect: %v; want the server's %q", err, c.want)
			case !errors.Is(err, driver.ErrDenied) || errors.Is(err, driver.ErrUnavailable):
				t.Errorf("Connect: %v; want driver.ErrDenied alone", err)
			}
			for _, secret := range []string{wrong, url.QueryEscape(wrong), url.PathEscape(wrong), pg.Password} {
				if err != nil && strings.Contains(err.Error(), secret) {
					t.Errorf("the error carries a password: %v", err)
				}
			}
			t.Logf("%s: %v", c.name, err)
		})
	}
	// The right password connects.
	mc := openClient(t, newPool(t, pg.DSN("", nil), 4), uniqueNamespace(t))
	if err := mc.Ping(t.Context()); err != nil {
		t.Fatalf("Ping with the right password: %v", err)
	}
}

// A nil pool and a bad option are driver.ErrInvalid, reported by Connect.
func TestInvalid(t *testing.T) {
	if _, err := pgxv5.FromPool(nil).Connect(t.Context()); !errors.Is(err, driver.ErrInvalid) {
		t.Errorf("nil pool: %v; want driver.ErrInvalid", err)
	}
	pool := newPool(t, testserver.PostgresDSN(t), 4)
	if _, err := pgxv5.FromPool(pool, postgres.WithMaxKeys(0)).Connect(t.Context()); !errors.Is(err, driver.ErrInvalid) {
		t.Errorf("WithMaxKeys(0): %v; want driver.ErrInvalid", err)
	}
}
