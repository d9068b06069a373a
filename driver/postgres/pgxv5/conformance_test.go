package pgxv5_test

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/pgxv5"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// harnessHeartbeat is the heartbeat of the suite's clients
// (mutex.WithHeartbeat): a killed session is reported lost within about
// two.
const harnessHeartbeat = 250 * time.Millisecond

// TestConformance runs the suite on FromPool: every connector is a new
// client of one application pool, as a service's Lockers would be.
// Fencing runs both as the suite asks for it and on every acquisition.
func TestConformance(t *testing.T) {
	dsn := testserver.PostgresDSN(t)
	pool := newPool(t, dsn, 64)
	maker := func(ctx context.Context, t *testing.T) (conformance.Harness, error) {
		return &harness{pool: pool, ns: uniqueNamespace(t), admin: openAdmin(t, dsn)}, nil
	}
	hb := mutex.WithHeartbeat(harnessHeartbeat)
	t.Run("fencing=asked", func(t *testing.T) { conformance.Run(t, maker, hb) })
	t.Run("fencing=always", func(t *testing.T) {
		conformance.Run(t, maker, hb, mutex.WithMiddleware(mutex.Middleware{
			Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { return fenceAll{next} },
		}))
	})
}

// fenceAll asks for a fencing token on every acquisition.
type fenceAll struct{ driver.Locker }

func (f fenceAll) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	req.Fencing = true
	return f.Locker.Acquire(ctx, req)
}

// harness: every connector is a new client on one pgx pool, with a
// namespace of the test's own so that runs do not collide.
type harness struct {
	pool  *pgxpool.Pool
	ns    string
	admin *sql.DB

	mu      sync.Mutex
	pending []*time.Timer
	conns   []*sql.Conn
}

func (h *harness) NewConnector(context.Context) (driver.Connector, error) {
	return pgxv5.FromPool(h.pool, postgres.WithNamespace(h.ns)), nil
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
		LossWithin: 20 * harnessHeartbeat, // about two heartbeats, with room for a busy machine
		FreeWithin: 30 * time.Second,      // Abandon's holder dies 2s after Abandon
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
	return nil
}
