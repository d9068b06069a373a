package testserver

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/lib/pq" // registers database/sql's "postgres"
)

// DefaultPostgresDSN is where tests find PostgreSQL when
// MUTEXKIT_POSTGRES_DSN is not set.
const DefaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// PostgresDSN returns the DSN of the PostgreSQL tests use, after checking
// that it answers; when it does not, t is skipped (or failed, with
// MUTEXKIT_REQUIRE_SERVICES=1).
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("MUTEXKIT_POSTGRES_DSN")
	if dsn == "" {
		dsn = DefaultPostgresDSN
	}
	db, err := sql.Open("postgres", dsn)
	if err == nil {
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = db.PingContext(ctx)
	}
	if err != nil {
		Unavailable(t, "PostgreSQL at MUTEXKIT_POSTGRES_DSN (default "+DefaultPostgresDSN+")",
			"run scripts/services, or point MUTEXKIT_POSTGRES_DSN at a server ("+redactedErr(err, dsn)+")")
	}
	return dsn
}

// redactedErr keeps a DSN's password out of a skip message: when the DSN
// has one, only that the connection failed is said.
func redactedErr(err error, dsn string) string {
	if u, perr := url.Parse(dsn); perr != nil || strings.Contains(dsn, "password") {
		return "connection failed"
	} else if _, has := u.User.Password(); has {
		return "connection failed"
	}
	return err.Error()
}
