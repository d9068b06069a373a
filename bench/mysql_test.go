package bench

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/mutexkit/mutexkit/driver/mysql"
	"github.com/mutexkit/mutexkit/mutex"
)

// defaultMySQLDSN is where MySQL or MariaDB is found when
// MUTEXKIT_MYSQL_DSN is not set (what scripts/services starts).
const defaultMySQLDSN = "mysql://root@127.0.0.1:3306/test"

// mysqlDSN returns the URL DSN of a MySQL or MariaDB server that answers,
// and an admin pool on it (closed when b ends), or skips (fails) b.
func mysqlDSN(b testing.TB) (string, *sql.DB) {
	b.Helper()
	dsn := os.Getenv("MUTEXKIT_MYSQL_DSN")
	if dsn == "" {
		dsn = defaultMySQLDSN
	}
	u, err := url.Parse(dsn)
	if err != nil || len(u.Path) < 2 {
		b.Fatalf("MUTEXKIT_MYSQL_DSN: want mysql://user[:password]@host:port/dbname")
	}
	mc := gomysql.NewConfig()
	mc.User = u.User.Username()
	mc.Passwd, _ = u.User.Password()
	mc.Net, mc.Addr, mc.DBName = "tcp", u.Host, u.Path[1:]
	mc.Timeout = 3 * time.Second
	db, err := sql.Open("mysql", mc.FormatDSN())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = db.PingContext(ctx)
		cancel()
	}
	if err != nil {
		if db != nil {
			db.Close()
		}
		unavailable(b, "MySQL/MariaDB at MUTEXKIT_MYSQL_DSN (default "+defaultMySQLDSN+")",
			"run scripts/services, or point MUTEXKIT_MYSQL_DSN at a server")
	}
	b.Cleanup(func() { db.Close() })
	return dsn, db
}

// openOursMySQL opens a mutexkit client on the MySQL server at dsn, in a
// namespace of the benchmark's own.
func openOursMySQL(b testing.TB, dsn string, opts ...mutex.Option) *mutex.Client {
	b.Helper()
	cn, err := mysql.NewConnector(dsn, mysql.WithNamespace(b.Name()))
	if err != nil {
		b.Fatal(err)
	}
	return pinged(b, mutex.NewClient(cn, opts...))
}

// uncontendedMySQLFloor is what a MySQL lock cannot do with less: prepared
// GET_LOCK(name, 0) and RELEASE_LOCK(name) on one connection, one round
// trip each, on a lock name as long as ours.
func uncontendedMySQLFloor(b *testing.B) {
	ctx := context.Background()
	_, db := mysqlDSN(b)
	conn, err := db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	lock, err := conn.PrepareContext(ctx, `SELECT GET_LOCK(?, 0)`)
	if err != nil {
		b.Fatal(err)
	}
	defer lock.Close()
	unlock, err := conn.PrepareContext(ctx, `SELECT RELEASE_LOCK(?)`)
	if err != nil {
		b.Fatal(err)
	}
	defer unlock.Close()
	name := mysql.LockName(b.Name(), keyFor(b))
	b.ReportAllocs()
	for b.Loop() {
		var ok sql.NullInt64
		if err := lock.QueryRowContext(ctx, name).Scan(&ok); err != nil || ok.Int64 != 1 {
			b.Fatal(ok, err)
		}
		if err := unlock.QueryRowContext(ctx, name).Scan(&ok); err != nil || ok.Int64 != 1 {
			b.Fatal(ok, err)
		}
	}
}

// questionsMeter counts the statements clients sent the server from start
// to end (its global Questions counter: prepared executions included, so
// anything else running on the server counts too), as stmts/handoff.
func questionsMeter(b *testing.B, admin *sql.DB) *serverMeter {
	read := func() int64 {
		var name string
		var v int64
		if err := admin.QueryRow(`SHOW GLOBAL STATUS LIKE 'Questions'`).Scan(&name, &v); err != nil {
			b.Error(err)
		}
		return v
	}
	var before, after int64
	return &serverMeter{
		start: func() { before = read() },
		end:   func() { after = read() },
		report: func(handoffs int) {
			// One of the meter's two SHOWs falls between the readings.
			b.ReportMetric(float64(after-before-1)/float64(handoffs), stmtsPerHandoff)
		},
	}
}

// stmtsPerHandoff is the MySQL handoff's server work: statements.
const stmtsPerHandoff = "stmts/handoff"
