package pgxv5_test

import (
	"database/sql"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/internal/pgsuite"
	"github.com/mutexkit/mutexkit/driver/postgres/pgxv5"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

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
	mc := openClient(t, newPool(t, pg.DSN("", nil), 4), pgsuite.Namespace(t))
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

// postgres.FromDB refuses a *sql.DB of pgx's database/sql adapter, with
// driver.ErrInvalid pointing to FromPool: one of stdlib.OpenDBFromPool
// would hand each lock session back to the pgx pool, locks and settings
// included, when the driver discards it. One of stdlib.OpenDB (its own
// connections) is refused too: from outside the two cannot be told apart.
// Nothing is run on the connection FromDB looked at.
func TestFromDBOfPgxRefused(t *testing.T) {
	dsn := testserver.PostgresDSN(t)
	pool := newPool(t, dsn, 4)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		db   *sql.DB
	}{
		{"OpenDBFromPool", stdlib.OpenDBFromPool(pool)},
		{"OpenDB", stdlib.OpenDB(*cfg)},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer c.db.Close()
			l, err := postgres.FromDB(c.db).Connect(t.Context())
			if err == nil {
				l.Close()
				t.Fatal("Connect succeeded")
			}
			if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), "pgxv5.FromPool") {
				t.Fatalf("Connect: %v; want driver.ErrInvalid pointing to pgxv5.FromPool", err)
			}
			t.Logf("Connect: %v", err)
		})
	}
	// The pool's connection was given back untouched: no session settings.
	var setting string
	if err := pool.QueryRow(t.Context(), `SELECT coalesce(current_setting('mutexkit.session', true), '')`).Scan(&setting); err != nil {
		t.Fatal(err)
	}
	if setting != "" {
		t.Fatalf("a pool connection carries the driver's session setting %q", setting)
	}
}
