package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/internal/pgsuite"
)

// The scenarios of package pgsuite, shared with the pgx module, run here on
// lib/pq, each under the name its test had when it lived here.

// libpq is the driver on its own connections (NewConnector); libpqDB on
// the application's *sql.DB (FromDB).
var (
	libpq   = pgsuite.Client{Name: "dsn", Open: openDSN, SQLState: pqState}
	libpqDB = pgsuite.Client{Name: "db", Open: openSQLDB, SQLState: pqState}
)

// pqState is the SQLSTATE of lib/pq's *pq.Error in err's chain, or "".
func pqState(err error) string {
	if pe, ok := errors.AsType[*pq.Error](err); ok {
		return string(pe.Code)
	}
	return ""
}

func openDSN(t testing.TB, dsn string) (func(...postgres.Option) driver.Connector, pgsuite.Borrow) {
	return func(opts ...postgres.Option) driver.Connector {
		t.Helper()
		conn, err := postgres.NewConnector(dsn, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}, nil
}

// openSQLDB opens a *sql.DB on dsn, closed when t ends, for FromDB.
func openSQLDB(t testing.TB, dsn string) (func(...postgres.Option) driver.Connector, pgsuite.Borrow) {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	borrow := func(ctx context.Context, n int) ([]int, error) {
		var pids []int
		for range db.Stats().Idle + n {
			conn, err := db.Conn(ctx)
			if err != nil {
				return nil, err
			}
			defer conn.Close()
			var pid int
			if err := conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				return nil, err
			}
			pids = append(pids, pid)
		}
		return pids, nil
	}
	return func(opts ...postgres.Option) driver.Connector { return postgres.FromDB(db, opts...) }, borrow
}

// eachKind runs scenario with both kinds of Connector, as subtests "dsn"
// and "db".
func eachKind(t *testing.T, scenario func(*testing.T, pgsuite.Client)) {
	for _, c := range []pgsuite.Client{libpq, libpqDB} {
		t.Run(c.Name, func(t *testing.T) { scenario(t, c) })
	}
}

func TestHelperProcess(t *testing.T) { pgsuite.HelperProcess(t, libpq) }

func TestConformance(t *testing.T) { pgsuite.Conformance(t, libpq) }

func TestConformanceRestartEmpty(t *testing.T) { pgsuite.ConformanceRestartEmpty(t, libpq) }

func TestNoRegrantToSameSession(t *testing.T) { pgsuite.NoRegrantToSameSession(t, libpq) }

func TestDeadlineNeverCancelsSession(t *testing.T) { pgsuite.DeadlineNeverCancelsSession(t, libpq) }

func TestServerSideTimeoutBoundsStatements(t *testing.T) {
	pgsuite.ServerSideTimeoutBoundsStatements(t, libpq)
}

func TestKilledSessionLosesEveryLease(t *testing.T) { pgsuite.KilledSessionLosesEveryLease(t, libpq) }

func TestDBConnectorDiscardsSessions(t *testing.T) { pgsuite.PoolDiscardsSessions(t, libpqDB) }

func TestCancelledUnlockReleases(t *testing.T) { pgsuite.CancelledUnlockReleases(t, libpq) }

func TestTwoThousandKeysFewSessions(t *testing.T) { pgsuite.TwoThousandKeysFewSessions(t, libpq) }

func TestMaxKeys(t *testing.T) { pgsuite.MaxKeys(t, libpq) }

func TestTwoProcessesExclude(t *testing.T) { pgsuite.TwoProcessesExclude(t, libpq) }

func TestCrashedProcessFreesKey(t *testing.T) { pgsuite.CrashedProcessFreesKey(t, libpq) }

func TestClusterNetworkCutFreesLocks(t *testing.T) { pgsuite.ClusterNetworkCutFreesLocks(t, libpq) }

func TestClusterPgBouncer(t *testing.T) { pgsuite.ClusterPgBouncer(t, libpq) }

func TestClusterStandbyRefused(t *testing.T) { eachKind(t, pgsuite.ClusterStandbyRefused) }

func TestClusterSilentPeer(t *testing.T) { eachKind(t, pgsuite.ClusterSilentPeer) }

func TestClusterSilentPeerAtConnect(t *testing.T) { eachKind(t, pgsuite.ClusterSilentPeerAtConnect) }
