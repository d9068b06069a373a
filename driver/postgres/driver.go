package postgres

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
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

// OpenConnector parses dsn with the driver's own parameters (see the package
// documentation) and returns a Connector. It does no I/O.
func (Driver) OpenConnector(dsn string) (driver.Connector, error) { return NewConnector(dsn) }

// NewConnector returns a Connector that opens its own connections to the
// database dsn names: a libpq URL (postgres://user:pass@host:5432/db?...)
// or keyword string (host=... dbname=...). The DSN must name a database.
// Parameters starting with mutexkit_ configure this driver and are removed
// before lib/pq sees the DSN; opts override them. It does no I/O. Errors
// match driver.ErrInvalid and never contain the password.
func NewConnector(dsn string, opts ...Option) (driver.Connector, error) {
	cfg := defaultConfig()
	info, err := parseDSN(dsn, &cfg)
	if err != nil {
		return nil, err
	}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if cfg.err != nil {
		return nil, cfg.err
	}
	return &connector{cfg: cfg, dsn: info}, nil
}

// NewDBConnector returns a Connector whose lock sessions come from the
// application's own pool. Each session is a *sql.Conn taken from db for
// as long as the client lives, and discarded (closed, never handed back)
// when done, since it may hold locks and carries this driver's settings;
// a client holds at most MaxSessions of them. db should use lib/pq: with
// another driver, whose errors this driver cannot classify, any failed
// statement ends its session (and reports its leases lost). The TCP
// keepalive of db's own connections is db's business; this driver still
// sets the server side of it (see WithKeepalive).
//
// Wake-ups on release need a LISTEN connection, which database/sql cannot
// provide: pass WithListenDSN, or waiters poll.
func NewDBConnector(db *sql.DB, opts ...Option) driver.Connector {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	c := &connector{cfg: cfg, db: db}
	if cfg.listenDSN != "" {
		lcfg := cfg
		info, err := parseDSN(cfg.listenDSN, &lcfg)
		if err != nil {
			c.cfg.err = fmt.Errorf("WithListenDSN: %w", err)
		}
		c.dsn = info
	}
	return c
}

// NewSqlxConnector is NewDBConnector for a *sqlx.DB.
func NewSqlxConnector(db *sqlx.DB, opts ...Option) driver.Connector {
	return NewDBConnector(db.DB, opts...)
}

type connector struct {
	cfg config
	dsn dsnInfo
	db  *sql.DB // the application's, or nil
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
	if c.db != nil {
		l = newLocker(c.cfg, c.db, false, nil, c.dsn)
	} else {
		d := newDialer(&c.cfg)
		pcfg := c.dsn.pqConfig
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
