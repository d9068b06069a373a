package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/internal/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// testClient opens a client in a namespace of the test's own and returns
// it with its Locker, caught by a middleware.
func testClient(t *testing.T, dsn, ns string, opts ...Option) (*mutex.Client, *locker) {
	t.Helper()
	conn, err := NewConnector(dsn, append([]Option{WithNamespace(ns)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return wrapClient(t, conn)
}

func wrapClient(t *testing.T, conn driver.Connector) (*mutex.Client, *locker) {
	t.Helper()
	var l *locker
	c := mutex.NewClient(conn, mutex.WithMiddleware(mutex.Middleware{
		Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { l = next.(*locker); return next },
	}))
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c, l
}

func namespace(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	return t.Name() + "/" + hex.EncodeToString(b[:])
}

func adminDB(t testing.TB) (string, *sql.DB) {
	t.Helper()
	dsn := testserver.PostgresDSN(t)
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return dsn, db
}

// waitFor polls cond until it holds or a generous bound passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sessionsOf counts the server connections of the locker's client.
func sessionsOf(t *testing.T, db *sql.DB, l *locker) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, l.appName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
