package bench

import (
	"database/sql"
	"net/url"
	"testing"
	"time"
)

// benchDatabase is the database the handoff benchmark's PostgreSQL clients
// use, made on first use, so that its transaction count in
// pg_stat_database is theirs alone: other sessions' tests share the
// server's default database.
const benchDatabase = "mutexkit_bench"

// pgStatIdleFlush is how long an idle PostgreSQL backend (15 and later)
// may keep the transaction counts it has not reported yet
// (PGSTAT_IDLE_INTERVAL, 10 s), with a margin. A backend reports them at
// most once a second while busy, and at once when it exits;
// pg_stat_force_next_flush() only reaches the backend that calls it.
const pgStatIdleFlush = 10500 * time.Millisecond

// benchDatabaseDSN returns postgresDSN with its database set to
// benchDatabase, which it makes if missing.
func benchDatabaseDSN(b testing.TB) string {
	b.Helper()
	dsn := postgresDSN(b)
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		b.Fatalf("MUTEXKIT_POSTGRES_DSN must be a postgres:// URL here (the handoff benchmark opens database %s on the same server)", benchDatabase)
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var exists bool
	if err := db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, benchDatabase).Scan(&exists); err != nil {
		b.Fatal(err)
	}
	if !exists {
		if _, err := db.Exec(`CREATE DATABASE ` + benchDatabase); err != nil {
			// Another process may have made it meanwhile.
			if err2 := db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, benchDatabase).Scan(&exists); err2 != nil || !exists {
				b.Fatalf("create database %s: %v", benchDatabase, err)
			}
		}
	}
	u.Path = "/" + benchDatabase
	return u.String()
}

// xactMeter counts the transactions of benchDatabase (xact_commit plus
// xact_rollback in pg_stat_database), reading them from another database
// so that its own queries do not count.
type xactMeter struct {
	db     *sql.DB
	before int64
}

func countXacts(b testing.TB) *xactMeter {
	b.Helper()
	db, err := sql.Open("postgres", postgresDSN(b))
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	b.Cleanup(func() { db.Close() })
	return &xactMeter{db: db}
}

func (m *xactMeter) read(b testing.TB) int64 {
	var n int64
	if err := m.db.QueryRow(`SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1`, benchDatabase).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// start waits until the idle clients have reported what they did so far
// (the warm-up), and takes the count.
func (m *xactMeter) start(b testing.TB) {
	time.Sleep(pgStatIdleFlush)
	m.before = m.read(b)
}

// total returns the transactions since start. The clients must be closed
// first: a backend reports its last counts when it exits. It waits until
// no backend is left on benchDatabase and the count has stopped moving.
func (m *xactMeter) total(b testing.TB) int64 {
	deadline := time.Now().Add(pgStatIdleFlush + 5*time.Second)
	for time.Now().Before(deadline) {
		var left int
		if err := m.db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, benchDatabase).Scan(&left); err != nil {
			b.Fatal(err)
		}
		if left == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	last, still := m.read(b), 0
	for still < 3 && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		n := m.read(b)
		if n == last {
			still++
		} else {
			last, still = n, 0
		}
	}
	return last - m.before
}
