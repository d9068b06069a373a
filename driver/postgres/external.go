package postgres

import (
	"database/sql"
	"fmt"
	"net"
	"reflect"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres/internal/backend"
)

// Pools another module supplies (driver/postgres/pgxv5): its connections
// and errors, this package's Locker.
func init() {
	backend.NewConnector = func(p backend.Pool, opts any) driver.Connector {
		cfg := defaultConfig()
		o, _ := opts.([]Option)
		cfg.apply(o)
		return &connector{cfg: cfg, external: &p}
	}
}

// connectExternal makes the Locker of a module's pool: its *sql.DB is the
// Locker's own (closed by Close; its connections, destroyed when closed,
// never go back to the pool), but the connections are the application's,
// so waiting for one is bounded as for FromDB.
func (c *connector) connectExternal() (*locker, error) {
	db, err := c.external.Open()
	if err != nil {
		return nil, err
	}
	// Sessions are taken for good and discarded, never pooled.
	db.SetMaxIdleConns(0)
	return newLocker(c.cfg, db, true, nil, dsnInfo{password: c.external.Secret}), nil
}

// socketOf returns the network connection under c, when its driver
// connection gives it (backend.Socket), or nil.
func socketOf(c *sql.Conn) net.Conn {
	var nc net.Conn
	c.Raw(func(dc any) error {
		if s, ok := dc.(backend.Socket); ok {
			nc = s.NetConn()
		}
		return nil
	})
	return nc
}

// pgxStdlib is the package of pgx's database/sql adapter.
const pgxStdlib = "github.com/jackc/pgx/v5/stdlib"

// errPgxStdlib refuses FromDB of pgx's database/sql adapter. A *sql.DB of
// stdlib.OpenDBFromPool hands a connection database/sql closes back to the
// pgx pool: a discarded lock session would go back with its locks and this
// driver's settings. One of stdlib.OpenDB or sql.Open("pgx", ...) closes
// its connections, but its connections are of the same type and cannot be
// told apart from outside, and this package reads pgx's server errors only
// when pgxv5 is linked in: it is refused too.
var errPgxStdlib error = kindError{fmt.Errorf("postgres: FromDB of a *sql.DB of pgx's database/sql adapter (%s), whose connections may go back to a pgx pool holding locks: use pgxv5.FromPool (module github.com/mutexkit/mutexkit/driver/postgres/pgxv5) with the *pgxpool.Pool, or NewConnector with the DSN", pgxStdlib), driver.ErrInvalid}

// isPgxStdlib reports whether c is a connection of pgx's database/sql
// adapter, by its type's package: this module does not depend on pgx.
func isPgxStdlib(c *sql.Conn) bool {
	var pgx bool
	c.Raw(func(dc any) error {
		t := reflect.TypeOf(dc)
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		pgx = t.PkgPath() == pgxStdlib
		return nil
	})
	return pgx
}
