package pgxv5_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/internal/pgsuite"
	"github.com/mutexkit/mutexkit/driver/postgres/pgxv5"
)

// pgxClient is the driver on an application's pgx pool (FromPool).
var pgxClient = pgsuite.Client{Name: "pgx", Open: openPool, SQLState: pgxState}

// pgxState is the SQLSTATE of pgx's *pgconn.PgError in err's chain, or "".
func pgxState(err error) string {
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pe.Code
	}
	return ""
}

// poolMaxConns caps the tests' pools. Each client's lock sessions (up to
// postgres.MaxSessions) and its waits in the server are connections of
// the pool, and the conformance cases keep up to about twenty clients
// open on one pool at once (the driver on its own connections opens as
// many); pgxpool's default (4 on two cores) would leave them waiting.
const poolMaxConns = 64

// openPool makes a pgx pool on dsn, closed when t ends, for FromPool, and
// a Borrow that acquires every idle connection and n more.
func openPool(t testing.TB, dsn string) (func(...postgres.Option) driver.Connector, pgsuite.Borrow) {
	t.Helper()
	p := newPool(t, dsn, poolMaxConns)
	borrow := func(ctx context.Context, n int) ([]int, error) {
		var pids []int
		for range int(p.Stat().IdleConns()) + n {
			c, err := p.Acquire(ctx)
			if err != nil {
				return nil, err
			}
			defer c.Release()
			pids = append(pids, int(c.Conn().PgConn().PID()))
		}
		return pids, nil
	}
	return func(opts ...postgres.Option) driver.Connector { return pgxv5.FromPool(p, opts...) }, borrow
}

func TestHelperProcess(t *testing.T) { pgsuite.HelperProcess(t, pgxClient) }

// TestSuite runs every scenario of the PostgreSQL driver's suite on pgx.
func TestSuite(t *testing.T) { pgsuite.Run(t, pgxClient) }
