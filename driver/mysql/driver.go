package mysql

import (
	"context"
	"database/sql"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Name is the name the driver registers under.
const Name = "mysql"

func init() {
	mutex.Register("mysql", Driver{})
}

// Driver is the MySQL and MariaDB driver. Its zero value is ready to use.
type Driver struct{}

// OpenConnector calls NewConnector: it parses dsn and does no I/O.
func (Driver) OpenConnector(dsn string) (driver.Connector, error) { return NewConnector(dsn) }

// NewConnector returns a Connector that opens its own connections to the
// database dsn names, a URL
//
//	mysql://user:password@host:3306/dbname?tls=true&mutexkit_namespace=billing
//
// or go-sql-driver's own form, user:password@tcp(host:3306)/dbname?....
// The DSN must name a database (the fencing table lives there).
// Parameters starting with mutexkit_ configure this driver and never
// reach the server; the others are go-sql-driver's; opts override them.
// It does no I/O. Errors match driver.ErrInvalid and never contain the
// password.
func NewConnector(dsn string, opts ...Option) (driver.Connector, error) {
	cfg := defaultConfig()
	mc, err := parseDSN(dsn, &cfg)
	if err != nil {
		return nil, err
	}
	cfg.apply(opts)
	cfg.fitReadTimeout(mc.ReadTimeout)
	if cfg.err != nil {
		return nil, cfg.err
	}
	return &connector{cfg: cfg, mc: mc}, nil
}

// FromDB returns a Connector whose lock sessions come from the
// application's own pool (an *sqlx.DB's is its DB field). Each session is
// a *sql.Conn taken from db for as long as the client lives, and discarded
// (closed, never handed back) when done, since it may hold locks and
// carries this driver's settings (wait_timeout). db should use
// go-sql-driver: with another driver, whose errors this driver cannot
// classify, any failed statement ends its session (and loses its leases).
// The database db names must hold the fencing table if fencing is asked
// for. With waits in the server (the default), db's readTimeout, if it
// has one, must exceed 31 s: each wait is a GET_LOCK of up to 30 s, and a
// read deadline that ends it closes its session, so that the waiter loses
// its place (NewConnector fits the wait to its DSN's readTimeout; here
// the driver cannot see it). A bad option is reported by Connect.
func FromDB(db *sql.DB, opts ...Option) driver.Connector {
	cfg := defaultConfig()
	cfg.apply(opts)
	return &connector{cfg: cfg, db: db}
}

type connector struct {
	cfg config
	mc  *gomysql.Config // nil for an application's *sql.DB
	db  *sql.DB
}

func (c *connector) DriverName() string { return Name }

// Connect opens the client's first lock session, so that a refused
// password, an unreachable server or a read-only one is reported here,
// and returns the Locker.
func (c *connector) Connect(ctx context.Context) (driver.Locker, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.cfg.err != nil {
		return nil, c.cfg.err
	}
	var l *locker
	if c.db != nil {
		l = newLocker(c.cfg, c.db, false, "")
	} else {
		mc := c.mc.Clone()
		if mc.Timeout == 0 {
			mc.Timeout = c.cfg.replyTimeout() // the dial; the handshake is bounded by Connect's context
		}
		if mc.WriteTimeout == 0 {
			// Closing a session writes COM_QUIT, with no context: a peer
			// that stopped reading must not hang it.
			mc.WriteTimeout = c.cfg.replyTimeout()
		}
		gc, err := gomysql.NewConnector(mc)
		if err != nil {
			return nil, redactErr(invalidDSN(err.Error()), mc.Passwd)
		}
		db := sql.OpenDB(gc)
		// Lock sessions are taken for good and discarded, never pooled: the
		// pool keeps only connections for Inspect's and a wait's
		// diagnostic queries, which never hold a lock.
		db.SetMaxIdleConns(2)
		db.SetConnMaxIdleTime(time.Minute)
		l = newLocker(c.cfg, db, true, mc.Passwd)
	}
	if err := l.start(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Compile-time checks.
var (
	_ driver.Driver    = Driver{}
	_ driver.Connector = (*connector)(nil)
	_ driver.Locker    = (*locker)(nil)
)
