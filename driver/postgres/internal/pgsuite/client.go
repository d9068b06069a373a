package pgsuite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Client is a PostgreSQL client library the driver runs on, as the
// scenarios see it.
type Client struct {
	// Name names the client in subtests ("dsn", "db", "pgx").
	Name string

	// Open opens the client on dsn, which may point at a proxy or at a
	// private server, and returns connect, which makes a Connector of a
	// new client with opts. Connectors of one Open share what an
	// application's Lockers share (a pool, for a client on a pool), so
	// that what Open made outlives each of them; it is closed when t
	// ends. borrow takes connections of that pool (nil when the client
	// has none). Open fails t if it cannot.
	Open func(t testing.TB, dsn string) (connect func(opts ...postgres.Option) driver.Connector, borrow Borrow)

	// SQLState returns the SQLSTATE of the client library's own server
	// error (lib/pq's *pq.Error, pgx's *pgconn.PgError) in err's chain, or
	// "": the scenarios check that the driver's errors carry it, for an
	// application's errors.As.
	SQLState func(err error) string
}

// Connect returns a Connector of a new client on dsn, with opts, from an
// Open of its own.
func (c Client) Connect(t testing.TB, dsn string, opts ...postgres.Option) driver.Connector {
	t.Helper()
	connect, _ := c.Open(t, dsn)
	return connect(opts...)
}

// Borrow takes every idle connection of an application's pool and n more,
// at once, and returns their backend pids; the connections go back to the
// pool.
type Borrow func(ctx context.Context, n int) ([]int, error)

// Scenario is one scenario of the suite.
type Scenario struct {
	Name string
	Run  func(t *testing.T, c Client)
}

// Scenarios lists every scenario Run runs, under the names of the core
// module's tests.
var Scenarios = []Scenario{
	{"Conformance", Conformance},
	{"ConformanceRestartEmpty", ConformanceRestartEmpty},
	{"NoRegrantToSameSession", NoRegrantToSameSession},
	{"DeadlineNeverCancelsSession", DeadlineNeverCancelsSession},
	{"ServerSideTimeoutBoundsStatements", ServerSideTimeoutBoundsStatements},
	{"KilledSessionLosesEveryLease", KilledSessionLosesEveryLease},
	{"PoolDiscardsSessions", PoolDiscardsSessions},
	{"CancelledUnlockReleases", CancelledUnlockReleases},
	{"TwoThousandKeysFewSessions", TwoThousandKeysFewSessions},
	{"MaxKeys", MaxKeys},
	{"TwoProcessesExclude", TwoProcessesExclude},
	{"CrashedProcessFreesKey", CrashedProcessFreesKey},
	{"ClusterNetworkCutFreesLocks", ClusterNetworkCutFreesLocks},
	{"ClusterPgBouncer", ClusterPgBouncer},
	{"ClusterStandbyRefused", ClusterStandbyRefused},
	{"ClusterSilentPeer", ClusterSilentPeer},
	{"ClusterSilentPeerAtConnect", ClusterSilentPeerAtConnect},
}

// Run runs every scenario with c, each as a subtest.
func Run(t *testing.T, c Client) {
	for _, s := range Scenarios {
		t.Run(s.Name, func(t *testing.T) { s.Run(t, c) })
	}
}

// Heartbeat is how often the scenarios' clients verify their leases
// (mutex.WithHeartbeat): a dead session is found within about two.
const Heartbeat = 100 * time.Millisecond

// open makes a client of c on dsn in namespace ns, with the scenarios'
// heartbeat unless mopts say otherwise, closed when t ends. It connects
// now: package mutex counts a session lease's first verification from the
// start of its attempt, so a slow first connect (-race) inside a TryLock
// could leave it less than a heartbeat.
func open(t testing.TB, c Client, dsn, ns string, opts []postgres.Option, mopts ...mutex.Option) *mutex.Client {
	t.Helper()
	conn := c.Connect(t, dsn, append([]postgres.Option{postgres.WithNamespace(ns)}, opts...)...)
	return newClient(t, conn, mopts...)
}

func newClient(t testing.TB, conn driver.Connector, mopts ...mutex.Option) *mutex.Client {
	t.Helper()
	mc := mutex.NewClient(conn, append([]mutex.Option{mutex.WithHeartbeat(Heartbeat)}, mopts...)...)
	t.Cleanup(func() { mc.Close() })
	mc.Ping(t.Context()) // a failure shows again at the first call
	return mc
}

// ping opens a client of c on dsn and returns what Ping says (Connect
// runs there: the first lock session is opened).
func ping(t testing.TB, c Client, dsn string) error {
	t.Helper()
	mc := mutex.NewClient(c.Connect(t, dsn))
	defer mc.Close()
	return mc.Ping(t.Context())
}

// Namespace is a namespace of the test's own, so that runs do not collide.
func Namespace(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	return t.Name() + "/" + hex.EncodeToString(b[:])
}

// adminDB returns the DSN of the shared test server and an administrator's
// pool on it (lib/pq: the observer), closed when t ends.
func adminDB(t testing.TB) (string, *sql.DB) {
	t.Helper()
	dsn := testserver.PostgresDSN(t)
	return dsn, OpenDB(t, dsn)
}

// OpenDB opens a lib/pq pool on dsn, closed when t ends.
func OpenDB(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// HolderPID returns the backend pid holding key in namespace ns, or 0.
func HolderPID(t testing.TB, db *sql.DB, ns, key string) int {
	t.Helper()
	classid, objid := postgres.LockTag(postgres.KeyID(ns, key))
	var pid int
	err := db.QueryRow(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted
		AND classid = $1 AND objid = $2`, int64(classid), int64(objid)).Scan(&pid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// WaitFor polls cond until it holds or a generous bound passes.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
