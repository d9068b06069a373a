package pgsuite

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// conformanceHeartbeat is the heartbeat of the conformance clients
// (mutex.WithHeartbeat): a killed session is reported lost within about
// two.
const conformanceHeartbeat = 250 * time.Millisecond

// Conformance runs package conformance twice: as it is, where only the
// fencing case asks for tokens (mutex.WithFencing), and with every
// acquisition fenced, so that each case also runs the fenced statement and
// reads the fencing table.
func Conformance(t *testing.T, c Client) {
	dsn := testserver.PostgresDSN(t)
	maker := func(ctx context.Context, t *testing.T) (conformance.Harness, error) {
		admin, err := sql.Open("postgres", dsn)
		if err != nil {
			return nil, err
		}
		// One Open per case, before the case counts goroutines: a pool's
		// own are the application's, not the driver's.
		connect, _ := c.Open(t, dsn)
		return &harness{connect: connect, ns: Namespace(t), admin: admin, lacks: onShared}, nil
	}
	hb := mutex.WithHeartbeat(conformanceHeartbeat)
	t.Run("fencing=asked", func(t *testing.T) { conformance.Run(t, maker, hb) })
	t.Run("fencing=always", func(t *testing.T) {
		conformance.Run(t, maker, hb, mutex.WithMiddleware(mutex.Middleware{
			Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { return fenceAll{next} },
		}))
	})
}

// onShared is what the harness on the shared server declares it lacks:
// that server is never restarted.
var onShared = map[string]string{
	"Queue/RestartEmpty": "the shared server is never restarted; ConformanceRestartEmpty runs this case on a private server",
}

// ConformanceRestartEmpty runs the conformance case Queue/RestartEmpty
// alone, on a private server (testserver.StartPGCluster) that its harness
// restarts; the shared server is never restarted. Restarted empty means,
// for PostgreSQL, that the server stops at once and starts again: every
// session ends, so every advisory lock, and every wait in the lock
// manager's queue, is gone. Tables stay: the fencing table keeps its
// counters, so tokens go on increasing across the restart, which is what
// fencing asks; the case checks grants and waits, not tokens.
func ConformanceRestartEmpty(t *testing.T, c Client) {
	pg := testserver.StartPGCluster(t, testserver.PGClusterOptions{})
	maker := func(ctx context.Context, t *testing.T) (conformance.Harness, error) {
		admin, err := sql.Open("postgres", pg.AdminDSN())
		if err != nil {
			return nil, err
		}
		connect, _ := c.Open(t, pg.DSN("", nil))
		return restartHarness{&harness{connect: connect, ns: Namespace(t), admin: admin}, pg}, nil
	}
	conformance.RunCase(t, "Queue/RestartEmpty", maker, mutex.WithHeartbeat(conformanceHeartbeat))
}

// restartHarness is a harness on a private server it may restart.
type restartHarness struct {
	*harness
	pg *testserver.PGCluster
}

// RestartEmpty restarts the private server (conformance.Restarter).
func (h restartHarness) RestartEmpty(context.Context) error { return h.pg.Restart() }

// fenceAll asks for a fencing token on every acquisition.
type fenceAll struct{ driver.Locker }

func (f fenceAll) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	req.Fencing = true
	return f.Locker.Acquire(ctx, req)
}

// harness: every connector is a new client of one database, from one Open
// of the client, with a namespace of the case's own.
type harness struct {
	connect func(...postgres.Option) driver.Connector
	ns      string
	admin   *sql.DB
	lacks   map[string]string // Capabilities.Lacks

	mu      sync.Mutex
	pending []*time.Timer
	conns   []*sql.Conn
}

func (h *harness) NewConnector(context.Context) (driver.Connector, error) {
	return h.connect(postgres.WithNamespace(h.ns)), nil
}

// Vanish kills the session that holds key, found in pg_locks.
func (h *harness) Vanish(ctx context.Context, key string) error {
	classid, objid := postgres.LockTag(postgres.KeyID(h.ns, key))
	var n int
	err := h.admin.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND classid = $1 AND objid = $2`,
		int64(classid), int64(objid)).Scan(&n)
	if err == nil && n == 0 {
		err = fmt.Errorf("no session holds %q", key)
	}
	return err
}

// Abandon takes key with plain SQL on a connection of its own, which is
// then killed, as a crashed holder's would be.
func (h *harness) Abandon(ctx context.Context, key string) error {
	conn, err := h.admin.Conn(ctx)
	if err != nil {
		return err
	}
	var pid int
	if err := conn.QueryRowContext(ctx, `SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock($1)) l`, postgres.KeyID(h.ns, key)).Scan(&pid); err != nil {
		conn.Close()
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conns = append(h.conns, conn)
	h.pending = append(h.pending, time.AfterFunc(2*time.Second, func() {
		h.admin.Exec(`SELECT pg_terminate_backend($1)`, pid)
	}))
	return nil
}

func (h *harness) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{
		Fencing:    true,
		TTL:        false,
		Queue:      true,
		LossWithin: 20 * conformanceHeartbeat, // about two heartbeats, with room for a busy machine
		FreeWithin: 30 * time.Second,          // Abandon's holder dies 2s after Abandon
		Lacks:      h.lacks,
	}
}

func (h *harness) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.pending {
		t.Stop()
	}
	for _, c := range h.conns {
		c.Raw(func(any) error { return sqldriver.ErrBadConn }) // never back to the pool: it may hold the lock
	}
	return h.admin.Close()
}
