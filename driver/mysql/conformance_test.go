package mysql_test

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
	"github.com/mutexkit/mutexkit/driver/mysql"
	"github.com/mutexkit/mutexkit/mutex"
)

// harnessHeartbeat is the heartbeat of the suite's clients: a killed
// session is reported lost within about two.
const harnessHeartbeat = 250 * time.Millisecond

// TestConformance runs the suite with waiting in the server (the default)
// and polling, and with every acquisition fenced.
func TestConformance(t *testing.T) {
	dsn, _ := testDSN(t)
	hb := mutex.WithHeartbeat(harnessHeartbeat)
	for _, wait := range []string{"server", "poll"} {
		maker := func(ctx context.Context, t *testing.T) (conformance.Harness, error) {
			h := newHarness(t, dsn, mysql.WithServerWait(wait == "server"))
			h.queue = wait == "server"
			return h, nil
		}
		t.Run("wait="+wait, func(t *testing.T) { conformance.Run(t, maker, hb) })
	}
	t.Run("fencing=always", func(t *testing.T) {
		maker := func(ctx context.Context, t *testing.T) (conformance.Harness, error) {
			h := newHarness(t, dsn)
			h.queue = true
			return h, nil
		}
		conformance.Run(t, maker, hb, mutex.WithMiddleware(mutex.Middleware{
			Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker { return fenceAll{next} },
		}))
	})
}

// TestConformanceRestartEmpty runs the case Queue/RestartEmpty alone, on a
// private server (startPrivateServer) that its harness restarts; the
// shared server is never restarted. Restarted empty means, for MySQL and
// MariaDB, that the server shuts down (SIGTERM: it closes every client
// connection) and starts again: every session ends, so every GET_LOCK
// lock, and every wait in the server, is gone. Tables stay: the fencing
// table keeps its counters, so tokens go on increasing across the
// restart, which is what fencing asks; the case checks grants and waits,
// not tokens.
func TestConformanceRestartEmpty(t *testing.T) {
	srv := startPrivateServer(t)
	maker := func(ctx context.Context, t *testing.T) (conformance.Harness, error) {
		admin := srv.admin("test")
		t.Cleanup(func() { admin.Close() })
		h := &harness{dsn: srv.dsn(), ns: uniqueNamespace(t), admin: admin, queue: true}
		return restartHarness{h, srv}, nil
	}
	conformance.RunCase(t, "Queue/RestartEmpty", maker, mutex.WithHeartbeat(harnessHeartbeat))
}

// restartHarness is a harness on a private server it may restart.
type restartHarness struct {
	*harness
	srv *privateServer
}

// RestartEmpty shuts the private server down and starts it again
// (conformance.Restarter).
func (h restartHarness) RestartEmpty(context.Context) error {
	if err := h.srv.stop(); err != nil {
		return err
	}
	return h.srv.start()
}

// fenceAll asks for a fencing token on every acquisition.
type fenceAll struct{ driver.Locker }

func (f fenceAll) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	req.Fencing = true
	return f.Locker.Acquire(ctx, req)
}

// harness: every connector is a new client of one database, with a
// namespace of the test's own so that runs do not collide.
type harness struct {
	dsn   string
	ns    string
	opts  []mysql.Option
	admin *sql.DB
	queue bool              // waits in the server: a FIFO queue
	lacks map[string]string // Capabilities.Lacks

	mu      sync.Mutex
	pending []*time.Timer
	conns   []*sql.Conn
}

func newHarness(t testing.TB, dsn string, opts ...mysql.Option) *harness {
	_, admin := testDSN(t)
	return &harness{dsn: dsn, ns: uniqueNamespace(t), admin: admin, opts: opts, lacks: onShared}
}

// onShared is what a harness on the shared server declares it lacks: that
// server is never restarted.
var onShared = map[string]string{
	"Queue/RestartEmpty": "the shared server is never restarted; TestConformanceRestartEmpty runs this case on a private server",
}

func (h *harness) NewConnector(context.Context) (driver.Connector, error) {
	return mysql.NewConnector(h.dsn, append([]mysql.Option{mysql.WithNamespace(h.ns)}, h.opts...)...)
}

// Vanish kills the connection that holds key's lock.
func (h *harness) Vanish(ctx context.Context, key string) error {
	return killHolder(ctx, h.admin, mysql.LockName(h.ns, key))
}

func killHolder(ctx context.Context, admin *sql.DB, name string) error {
	var id sql.NullInt64
	if err := admin.QueryRowContext(ctx, `SELECT IS_USED_LOCK(?)`, name).Scan(&id); err != nil {
		return err
	}
	if !id.Valid {
		return fmt.Errorf("no session holds the lock")
	}
	_, err := admin.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id.Int64))
	return err
}

// Abandon takes key with plain SQL on a connection of its own, which is
// then killed, as a crashed holder's would be.
func (h *harness) Abandon(ctx context.Context, key string) error {
	conn, err := h.admin.Conn(ctx)
	if err != nil {
		return err
	}
	var got, id int64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 10), CONNECTION_ID()`, mysql.LockName(h.ns, key)).Scan(&got, &id); err != nil || got != 1 {
		conn.Close()
		return fmt.Errorf("GET_LOCK: %d, %v", got, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conns = append(h.conns, conn)
	h.pending = append(h.pending, time.AfterFunc(2*time.Second, func() {
		h.admin.Exec(fmt.Sprintf("KILL CONNECTION %d", id))
	}))
	return nil
}

func (h *harness) Capabilities() conformance.Capabilities {
	c := conformance.Capabilities{
		Fencing:    true,
		TTL:        false,
		Queue:      h.queue,
		LossWithin: 20 * harnessHeartbeat,
		FreeWithin: 30 * time.Second, // Abandon's holder dies 2s after Abandon
		Lacks:      h.lacks,
	}
	return c
}

func (h *harness) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.pending {
		t.Stop()
	}
	for _, c := range h.conns {
		c.Raw(func(any) error { return sqldriver.ErrBadConn }) // never back to the pool: it may hold the lock
		c.Close()
	}
	return nil
}
