package postgres

import (
	"context"
	"database/sql"

	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres/internal/backend"
	"github.com/mutexkit/mutexkit/mutex"
)

// Name is the name the driver registers under.
const Name = "postgres"

func init() {
	mutex.Register("postgres", Driver{})
	mutex.Register("postgresql", Driver{})
}

// Driver is the PostgreSQL driver. Its zero value is ready to use.
type Driver struct{}

// OpenConnector calls NewConnector: it parses dsn and does no I/O.
func (Driver) OpenConnector(dsn string) (driver.Connector, error) { return NewConnector(dsn) }

// NewConnector returns a Connector that opens its own connections to the
// database dsn names: a libpq URL (postgres://user:pass@host:5432/db?...)
// or keyword string (host=... dbname=...), both read by lib/pq
// (pq.NewConfig, which also reads the PG* environment variables). The DSN
// must name a database. Parameters starting with mutexkit_ configure this
// driver and never reach the server; opts override them. It does no I/O.
// Errors match driver.ErrInvalid and never contain the password.
func NewConnector(dsn string, opts ...Option) (driver.Connector, error) {
	cfg := defaultConfig()
	info, err := parseDSN(dsn, &cfg)
	if err != nil {
		return nil, err
	}
	cfg.apply(opts)
	if cfg.err != nil {
		return nil, cfg.err
	}
	return &connector{cfg: cfg, dsn: info}, nil
}

// FromDB returns a Connector whose lock sessions come from the
// application's own pool (an *sqlx.DB's is its DB field). Each session is
// a *sql.Conn taken from db for as long as the client lives, and discarded
// (closed, never handed back) when done, since it may hold locks and
// carries this driver's settings; a client holds at most MaxSessions of
// them. db should use lib/pq: with another driver, whose errors this
// driver cannot classify, any failed statement ends its session (and
// loses its leases). For pgx use pgxv5.FromPool (module
// driver/postgres/pgxv5) with the *pgxpool.Pool: Connect refuses a db of
// pgx's database/sql adapter (package stdlib) with an error matching
// driver.ErrInvalid, since one of stdlib.OpenDBFromPool hands the
// connections database/sql closes back to the pgx pool, locks and settings
// included (one of stdlib.OpenDB, whose connections are its own, is
// refused as well: the two cannot be told apart). The TCP keepalive of db's own connections
// is db's business; this driver still sets the server side of it (see
// WithKeepalive). Waits in the server take connections from db too (see
// MaxWaiters). A bad option is reported by Connect.
func FromDB(db *sql.DB, opts ...Option) driver.Connector {
	cfg := defaultConfig()
	cfg.apply(opts)
	return &connector{cfg: cfg, db: db}
}

type connector struct {
	cfg config
	dsn dsnInfo
	db  *sql.DB // the application's, or nil

	external *backend.Pool // another module's pool (external.go), or nil
}

func (c *connector) DriverName() string { return Name }

// Connect opens the client's first lock session, so that a wrong password,
// an unreachable server or a standby is reported here, and returns the
// Locker.
func (c *connector) Connect(ctx context.Context) (driver.Locker, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.cfg.err != nil {
		return nil, c.cfg.err
	}
	var l *locker
	switch {
	case c.external != nil:
		var err error
		if l, err = c.connectExternal(); err != nil {
			return nil, err
		}
	case c.db != nil:
		l = newLocker(c.cfg, c.db, false, nil, c.dsn)
	default:
		d := newDialer(&c.cfg)
		pcfg := c.dsn.pq
		if pcfg.ConnectTimeout == 0 {
			// Bounds the dial and the handshake: a server that accepts and
			// then says nothing must not hold a new session for ever.
			pcfg.ConnectTimeout = c.cfg.replyTimeout()
		}
		pc, err := pq.NewConnectorConfig(pcfg)
		if err != nil {
			return nil, invalidDSN(redact(err.Error(), c.dsn.password))
		}
		pc.Dialer(d)
		db := sql.OpenDB(pc)
		// Sessions are taken for good and discarded, never pooled.
		db.SetMaxIdleConns(0)
		l = newLocker(c.cfg, db, true, d, c.dsn)
	}
	if err := l.start(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
