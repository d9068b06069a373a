package mysql_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
)

// The tests need a MySQL or MariaDB server: MUTEXKIT_MYSQL_DSN, by default
// root without a password on 127.0.0.1:3306, database test (what
// scripts/services starts). They skip without one, and fail under
// MUTEXKIT_REQUIRE_SERVICES=1, as the repository's other server tests do.
// (The repository's helper for this, internal/testing/testserver, is
// internal: a driver outside the module writes its own.)
const defaultDSN = "mysql://root@127.0.0.1:3306/test"

// testDSN returns the server's URL DSN and an admin pool on it.
func testDSN(t testing.TB) (string, *sql.DB) {
	t.Helper()
	dsn := os.Getenv("MUTEXKIT_MYSQL_DSN")
	if dsn == "" {
		dsn = defaultDSN
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("MUTEXKIT_MYSQL_DSN is not a URL")
	}
	mc := gomysql.NewConfig()
	mc.User = u.User.Username()
	mc.Passwd, _ = u.User.Password()
	mc.Net, mc.Addr = "tcp", u.Host
	mc.DBName = u.Path[1:]
	mc.Timeout = 3 * time.Second
	db, err := sql.Open("mysql", mc.FormatDSN())
	if err == nil {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err = db.PingContext(ctx)
		cancel()
	}
	if err != nil {
		if os.Getenv("MUTEXKIT_REQUIRE_SERVICES") == "1" {
			t.Fatalf("MySQL/MariaDB at %s: %v (MUTEXKIT_REQUIRE_SERVICES=1; run scripts/services)", u.Host, err)
		}
		t.Skipf("no MySQL/MariaDB at %s (%v): set MUTEXKIT_MYSQL_DSN or run scripts/services", u.Host, err)
	}
	t.Cleanup(func() { db.Close() })
	return dsn, db
}

// uniqueNamespace keeps a test's lock names apart from other runs'.
func uniqueNamespace(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	return t.Name() + "/" + hex.EncodeToString(b[:])
}

// hostPort is the server's address in dsn.
func hostPort(t testing.TB, dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal("bad DSN")
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return net.JoinHostPort(u.Host, "3306")
	}
	return u.Host
}
