package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/mysql"
	"github.com/mutexkit/mutexkit/internal/testing/chaos"
)

// The repository's reliability suite (internal/testing/chaos) run on this
// driver: worker processes (this test binary re-executed) contend for keys
// while faults are injected, and the checker looks for overlaps. A few
// seconds per scenario under go test; CHAOS_DURATION=20s for the long form
// (make chaos). This module may import the suite: Go's internal rule goes
// by path, and driver/mysql lies under github.com/mutexkit/mutexkit.

func TestMain(m *testing.M) {
	if chaos.IsWorker() {
		chaos.WorkerMain()
	}
	os.Exit(m.Run())
}

// chaosDSN returns the URL DSN of a fresh namespace, through hostPort if
// set, with extra parameters, and the namespace.
func chaosDSN(t *testing.T, hostPort string, params map[string]string) (dsn, ns string) {
	base, _ := testDSN(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if hostPort != "" {
		u.Host = hostPort
	}
	ns = chaos.Prefix()
	q := u.Query()
	q.Set("mutexkit_namespace", ns)
	for k, v := range params {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String(), ns
}

// lockSessions returns the connections holding the lock names of the
// suite's keys in namespace ns.
func lockSessions(ctx context.Context, admin *sql.DB, ns string) ([]int64, error) {
	var ids []int64
	for _, k := range chaos.Keys {
		var id sql.NullInt64
		if err := admin.QueryRowContext(ctx, `SELECT IS_USED_LOCK(?)`, mysql.LockName(ns, k)).Scan(&id); err != nil {
			return nil, err
		}
		if id.Valid {
			ids = append(ids, id.Int64)
		}
	}
	return ids, nil
}

// servedWait bounds a Lock's wait in mysql/kill-process: the dead head's
// place is dropped by the server at once, so a waiter waits for the other
// eleven clients' 5 ms sections; the rest is margin for a loaded machine.
const servedWait = 10 * time.Second

// served: Safe, and every waiter kept being served: no Lock gave up (a
// worker's Lock waits until 10 s after the run), none waited past
// servedWait.
func served(t *testing.T, f chaos.Figures) {
	chaos.Safe(t, f)
	if f.FailedLocks > 0 {
		t.Errorf("%d Lock calls failed: %v", f.FailedLocks, f.ErrSample)
	}
	if f.WaitMax > servedWait {
		t.Errorf("a Lock waited %v, more than %v: a waiter was not served", f.WaitMax, servedWait)
	}
}

// fenced: chaos.Fenced, and the fault did free a holder's key behind its
// back at least once (else the scenario proved nothing).
func fenced(t *testing.T, f chaos.Figures) {
	chaos.Fenced(t, f)
	if f.Sections == 0 {
		t.Errorf("no section completed: %v", f.ErrSample)
	}
	if f.Faults > 0 && f.LossN == 0 {
		t.Errorf("%d faults, yet no lease was lost: the fault missed the holders", f.Faults)
	}
}

// seenFirst: a holder cut off keeps holding past the server's freeing of
// its key (the controlled worker ignores the loss, so sections overlap),
// but it saw the loss before the next holder's section began: no overlap
// before any loss was seen, and fencing refused its late write.
func seenFirst(t *testing.T, f chaos.Figures) {
	fenced(t, f)
	if f.Check.Protected > 0 {
		t.Errorf("%d overlaps began before the cut-off holder saw its loss: %s", f.Check.Protected, f.Check)
	}
}

const lossPromise = "The server frees the locks of a session the moment it ends; its holder sees the loss at its next " +
	"heartbeat (1 s), after the fact. "

var mysqlScenarios = []chaos.Case{
	{Name: "mysql/kill-connection", Short: true, Check: fenced, Build: func(t *testing.T) chaos.Scenario {
		dsn, ns := chaosDSN(t, "", nil)
		_, admin := testDSN(t)
		ws := chaos.Workers(3, 2, dsn, 0, true)
		for i := range ws {
			ws[i].Hold = 100 * time.Millisecond // long enough to be caught holding
		}
		return chaos.Scenario{
			Backend: "MySQL/MariaDB, fencing, heartbeat 1 s", Model: chaos.LossAfterTheFact,
			Promise: lossPromise + "Sections may overlap; fencing tokens strictly increase and the resource refuses " +
				"the old holder's writes.",
			Workers: ws,
			Fault: func(ctx context.Context, r *chaos.Run) error {
				for chaos.Sleep(ctx, 500*time.Millisecond) {
					ids, err := lockSessions(ctx, admin, ns)
					if err != nil || len(ids) == 0 {
						continue
					}
					i := r.Inject("KILL CONNECTION of a lock session")
					if _, err := admin.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", ids[rand.IntN(len(ids))])); err != nil && ctx.Err() == nil {
						t.Logf("KILL: %v", err) // the session may have ended on its own
					}
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{Name: "mysql/partition", Short: true, Check: seenFirst, Build: func(t *testing.T) chaos.Scenario {
		base, _ := testDSN(t)
		p, err := chaos.NewProxy(hostPort(t, base))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		params := map[string]string{"mutexkit_idle_timeout": "3s"}
		cut, ns := chaosDSN(t, p.Addr(), params)
		params["mutexkit_namespace"] = ns
		direct, _ := chaosDSN(t, "", params)
		return chaos.Scenario{
			Backend: "MySQL/MariaDB, a holder behind a proxy, fencing, heartbeat 1 s, wait_timeout 3 s",
			Model:   chaos.LossAfterTheFact,
			Promise: "Cut off, a holder sees the loss within 2.5 heartbeats of its last verification; the server " +
				"keeps its locks until the session's wait_timeout (3 s here, counted from the same statement) ends it. " +
				"No other client holds the key before the cut-off holder has seen its loss.",
			Workers: append(chaos.Workers(2, 2, direct, 0, true), chaos.ControlledWorker(cut, 0, true)),
			Fault: func(ctx context.Context, r *chaos.Run) error {
				for {
					client, key, _, ok := r.Held(ctx)
					if !ok {
						return nil
					}
					p.SetMode(chaos.Blackhole, 0, 0)
					i := r.Inject("blackhole the holder's traffic")
					wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					r.WaitSection(wctx, client, key, r.At(i))
					cancel()
					p.SetMode(chaos.Pass, 0, 0)
					r.Heal(i)
					r.Controlled().Send("go")
				}
			},
		}
	}},
	{Name: "mysql/kill-process", Short: true, Check: served, Build: func(t *testing.T) chaos.Scenario {
		dsn, _ := chaosDSN(t, "", nil)
		ws := chaos.Workers(6, 2, dsn, 0, true)
		for i := range ws {
			ws[i].Keys = chaos.Keys[:1] // one key: the other clients always queued on it
		}
		return chaos.Scenario{
			Backend: "MySQL/MariaDB, fencing, one key", Safe: true, Model: chaos.LossAfterTheFact,
			Promise: "A process killed (SIGKILL) holding or waiting: the server frees its locks and drops its waits " +
				"the moment its connections close, and the queue goes on in arrival order.",
			Workers: ws,
			Fault: func(ctx context.Context, r *chaos.Run) error {
				for kills := 0; kills < 3 && chaos.Sleep(ctx, time.Second); {
					w, ok := r.HeadWaiter(chaos.Keys[0])
					if !ok {
						continue
					}
					i := r.Inject("kill -9 the head waiter's process")
					r.KillWorker(w)
					r.Heal(i)
					kills++
				}
				return nil
			},
		}
	}},
	{Name: "mysql/holder-paused-fenced", Short: true, Check: fenced, Build: func(t *testing.T) chaos.Scenario {
		dsn, _ := chaosDSN(t, "", map[string]string{"mutexkit_idle_timeout": "2s"})
		return chaos.Scenario{
			Backend: "MySQL/MariaDB, fencing, wait_timeout 2 s", Model: chaos.LossAfterTheFact,
			Promise: "A holder paused past its session's wait_timeout loses the lock while it cannot know; the server " +
				"grants it to the next waiter, and fencing tokens make the resource refuse the paused holder's late writes.",
			Workers: append(chaos.Workers(2, 2, dsn, 0, true), chaos.ControlledWorker(dsn, 0, true)),
			Fault:   chaos.PauseHolder,
		}
	}},
}

// TestChaos runs the MySQL scenarios: each a few seconds under go test,
// CHAOS_DURATION each with it set (make chaos).
func TestChaos(t *testing.T) {
	chaos.RunCases(t, mysqlScenarios)
}
