package postgres_test

import (
	"database/sql"
	"net/url"
	"strings"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/internal/pgsuite"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// pingErr opens a client on dsn, a URL or a keyword string, and returns
// what Ping says (Connect runs there: the first lock session is opened).
func pingErr(t *testing.T, dsn string) error {
	t.Helper()
	conn, err := postgres.NewConnector(dsn)
	if err != nil {
		t.Fatalf("NewConnector: %v", err)
	}
	c := mutex.NewClient(conn)
	defer c.Close()
	return c.Ping(t.Context())
}

// lockOnce takes and releases a key through a lib/pq client on dsn, and
// returns the role of the backend that held it, as seen by admin.
func lockOnce(t *testing.T, dsn string, admin *sql.DB) string {
	return pgsuite.LockOnce(t, libpq, dsn, admin)
}

// A wrong password gives a clear error (the server's "password
// authentication failed", matching driver.ErrDenied and not
// driver.ErrUnavailable: it is not an outage to wait out) that never
// contains the password, in either DSN form; the right one (scram-sha-256)
// connects and locks.
func TestClusterPasswordAuth(t *testing.T) {
	pg := testserver.StartPGCluster(t, testserver.PGClusterOptions{Password: true})
	admin := pg.AdminDB()
	defer admin.Close()

	const wrong = "Wr0ng-p4ss;word'x"
	u, _ := url.Parse(pg.DSN("", nil))
	u.User = url.UserPassword(pg.User, wrong)
	kw := "host=127.0.0.1 port=" + u.Port() + " user=" + pg.User + " dbname=postgres sslmode=disable password='" +
		strings.ReplaceAll(wrong, "'", `\'`) + "'"
	for _, dsn := range []string{u.String(), kw} {
		err := pingErr(t, dsn)
		switch {
		case err == nil:
			t.Fatalf("Ping with a wrong password succeeded")
		case !strings.Contains(err.Error(), "password authentication failed") || !strings.Contains(err.Error(), pg.User):
			t.Errorf("Ping: %v; want the server's \"password authentication failed for user %q\"", err, pg.User)
		default:
			checkKind(t, "Ping", err, driver.ErrDenied)
		}
		for _, secret := range []string{wrong, url.QueryEscape(wrong), url.PathEscape(wrong), pg.Password} {
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("the error carries a password: %v", err)
			}
		}
		t.Logf("wrong password: %v", err)
	}
	// Without a password at all: the server asks for one.
	u.User = url.User(pg.User)
	if err := pingErr(t, u.String()); err == nil {
		t.Errorf("Ping without a password succeeded against scram-sha-256")
	} else {
		checkKind(t, "Ping without a password", err, driver.ErrDenied)
		t.Logf("no password: %v", err)
	}

	if err := pingErr(t, pg.DSN("", nil)); err != nil {
		t.Fatalf("Ping with the right password: %v", err)
	}
	if role := lockOnce(t, pg.DSN("", nil), admin); role != pg.User {
		t.Errorf("the lock was held by role %q; want %q", role, pg.User)
	}
	var method string
	if err := admin.QueryRow(`SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND address = '127.0.0.1'`).Scan(&method); err != nil || method != "scram-sha-256" {
		t.Errorf("pg_hba method for 127.0.0.1: %q, %v; want scram-sha-256", method, err)
	}
}

// Every other way the server refuses this client is driver.ErrDenied too
// (not driver.ErrUnavailable), with the server's reason and without the
// password: a role that may not log in (28000), an unknown role (which
// scram reports as a failed password, 28P01), an unknown database
// (3D000), a database the role may not connect to (42501), a fencing table
// the role may not create (42501, at the first fenced TryLock), and a
// wrong password through FromDB.
func TestClusterRefusedClient(t *testing.T) {
	pg := testserver.StartPGCluster(t, testserver.PGClusterOptions{Password: true})
	admin := pg.AdminDB()
	defer admin.Close()
	const pw = "refused-Pw-7x"
	for _, q := range []string{
		`CREATE ROLE mk_nologin NOLOGIN PASSWORD '` + pw + `'`,
		`CREATE ROLE mk_nocreate LOGIN PASSWORD '` + pw + `'`,
		`CREATE DATABASE mk_closed`,
		`REVOKE CONNECT ON DATABASE mk_closed FROM PUBLIC`,
	} {
		if _, err := admin.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	dsn := func(user, password, db string) string {
		u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: pg.Addr(), Path: "/" + db, RawQuery: "sslmode=disable"}
		return u.String()
	}
	noSecret := func(err error) {
		t.Helper()
		for _, secret := range []string{pw, pg.Password} {
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("the error carries a password: %v", err)
			}
		}
	}
	for _, c := range []struct{ name, dsn, want string }{
		{"nologin", dsn("mk_nologin", pw, "postgres"), "not permitted to log in"},
		{"unknown role", dsn("mk_nosuchrole", pw, "postgres"), "password authentication failed"},
		{"unknown database", dsn(pg.User, pg.Password, "mk_nosuchdb"), `database "mk_nosuchdb" does not exist`},
		{"no CONNECT", dsn(pg.User, pg.Password, "mk_closed"), `permission denied for database "mk_closed"`},
	} {
		err := pingErr(t, c.dsn)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Ping: %v; want the server's %q", c.name, err, c.want)
		}
		checkKind(t, c.name, err, driver.ErrDenied)
		noSecret(err)
		t.Logf("%s: %v", c.name, err)
	}

	nc := openClient(t, dsn("mk_nocreate", pw, "postgres"), t.Name())
	_, err := nc.NewMutex("k", mutex.WithFencing()).TryLock(t.Context())
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("fenced TryLock without CREATE on the schema: %v; want the server's permission denied", err)
	}
	checkKind(t, "fenced TryLock without CREATE", err, driver.ErrDenied)
	noSecret(err)
	t.Logf("no CREATE for the fencing table: %v", err)

	db, err := sql.Open("postgres", dsn(pg.User, "wrong-"+pw, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dc := mutex.NewClient(postgres.FromDB(db))
	defer dc.Close()
	err = dc.Ping(t.Context())
	checkKind(t, "FromDB with a wrong password", err, driver.ErrDenied)
	noSecret(err)
}
