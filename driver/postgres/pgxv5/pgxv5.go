package pgxv5

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/internal/backend"
)

// The core driver reads pgx's server errors as it reads lib/pq's: SQLSTATE
// and severity decide whether a session survives an error, a refusal is
// driver.ErrDenied, and so on.
func init() { backend.SetServerErrors(serverError) }

// serverError reads a *pgconn.PgError in err's chain.
func serverError(err error) (backend.ServerError, bool) {
	pe, ok := errors.AsType[*pgconn.PgError](err)
	if !ok {
		return backend.ServerError{}, false
	}
	sev := pe.SeverityUnlocalized // since PostgreSQL 9.6; Severity may be translated
	if sev == "" {
		sev = pe.Severity
	}
	return backend.ServerError{Code: pe.Code, Severity: sev, Message: pe.Message}, true
}

// FromPool returns a Connector whose lock sessions are connections
// acquired from the application's pool: they count against its MaxConns
// for as long as the client (the Locker) lives, and so do waits in the
// server (up to postgres.MaxWaiters waiter sessions, each a connection).
// A connection that was a lock session is never released back to the pool
// holding locks or this driver's session settings: when done it is closed,
// which ends its server session and frees whatever it held, and pgxpool
// then destroys it. No other connection is dialled (there is no LISTEN
// connection: waiters wait in the server's lock queue).
//
// The TCP keepalive of the pool's connections is the pool's (its dialer's)
// business; this driver still sets the server side of it on each session
// (see postgres.WithKeepalive). Statements on a lock session never run
// under a caller's context, so a cancelled Lock never makes pgx close or
// cancel a session that carries other leases; each is bounded by the
// server's statement_timeout and a reply deadline on its socket instead.
//
// Close of the Locker closes what it took from pool, never pool itself.
// A nil pool or a bad Option is reported by Connect, matching
// driver.ErrInvalid; errors never contain the pool's password.
func FromPool(pool *pgxpool.Pool, opts ...postgres.Option) driver.Connector {
	p := backend.Pool{Open: func() (*sql.DB, error) {
		if pool == nil {
			return nil, fmt.Errorf("pgxv5: nil pool: %w", driver.ErrInvalid)
		}
		return sql.OpenDB(&connector{std: stdlib.GetPoolConnector(pool)}), nil
	}}
	if pool != nil {
		p.Secret = pool.Config().ConnConfig.Password
	}
	return backend.NewConnector(p, opts)
}

// connector is a database/sql connector over the pool: each connection it
// gives acquires one of the pool's, through pgx's own stdlib adapter.
type connector struct{ std sqldriver.Connector }

func (c *connector) Connect(ctx context.Context) (sqldriver.Conn, error) {
	dc, err := c.std.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := dc.(*stdlib.Conn)
	if !ok { // not what pgx v5.12's stdlib gives: never hand it back unclosed
		dc.Close()
		return nil, fmt.Errorf("pgxv5: stdlib gave a %T, not a *stdlib.Conn", dc)
	}
	return &conn{sc}, nil
}

func (c *connector) Driver() sqldriver.Driver { return c.std.Driver() }

// closeWithin bounds the Terminate message a closing connection sends.
const closeWithin = time.Second

// conn is pgx's database/sql connection, whose Close closes the pgx
// connection before releasing it, so that pgxpool destroys it rather than
// hand a connection that may hold locks to another user of the pool.
type conn struct{ *stdlib.Conn }

// Close ends the server session (freeing its locks), then releases the
// closed connection, which pgxpool destroys. A connection that broke
// under a statement (a session the driver gave up on) is cleaned up by
// pgx in a goroutine of its own, which sends the server a cancel request:
// Close waits for it too, within the same bound, so that none of pgx's
// work for the Locker's sessions outlives the Locker's Close.
func (c *conn) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeWithin)
	defer cancel()
	pc := c.Conn.Conn()
	err := pc.Close(ctx)
	select {
	case <-pc.PgConn().CleanupDone():
	case <-ctx.Done():
	}
	c.Conn.Close()
	return err
}

// NetConn gives the driver the socket (backend.Socket), for its reply
// deadlines.
func (c *conn) NetConn() net.Conn { return c.Conn.Conn().PgConn().Conn() }

var (
	_ sqldriver.Connector = (*connector)(nil)
	_ backend.Socket      = (*conn)(nil)
)
