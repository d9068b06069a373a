package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"

	_ "github.com/mutexkit/mutexkit/driver/file"    // the workers (this binary) open drivers by name
	_ "github.com/mutexkit/mutexkit/driver/redlock" //
)

func TestMain(m *testing.M) {
	if IsWorker() {
		WorkerMain()
	}
	os.Exit(m.Run())
}

func redisDSN(addrs []string) string {
	return "redis://" + strings.Join(addrs, ",") + "?prefix=" + Prefix()
}

func addrsOf(servers []*testserver.Redis) []string {
	var a []string
	for _, s := range servers {
		a = append(a, s.Addr())
	}
	return a
}

func proxies(t *testing.T, targets []string) []*Proxy {
	var ps []*Proxy
	for _, a := range targets {
		p, err := NewProxy(a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		ps = append(ps, p)
	}
	return ps
}

func proxyAddrs(ps []*Proxy) []string {
	var a []string
	for _, p := range ps {
		a = append(a, p.Addr())
	}
	return a
}

const redlockTTL = 2 * time.Second

const redlockPromise = "No two holders: a quorum (3 of 5) holds each lock; tolerates 2 nodes down, slow or cut off, " +
	"and nodes restarted empty one at a time. Loss reported before the lease can lapse. No fencing."

// The queue scenario's workers (2 clients each) and how many of them the
// fault kills, one every 3 s from the first second.
const (
	queueWorkers = 6
	queueKills   = 3
)

// servedWait bounds a Lock's wait in the queue scenario: a killed holder's
// lease runs out (redlockTTL), then a dead head's place (QueueHold), then
// eleven 5 ms sections; the rest is margin for a loaded machine.
const servedWait = 15 * time.Second

// served: safe, and every waiter kept being served: no Lock gave up (a
// worker's Lock waits until 10 s after the run), none waited past
// servedWait.
func served(t *testing.T, f Figures) {
	Safe(t, f)
	if f.FailedLocks > 0 {
		t.Errorf("%d Lock calls failed (a waiter not served before its deadline): %v", f.FailedLocks, f.ErrSample)
	}
	if f.WaitMax > servedWait {
		t.Errorf("a Lock waited %v, more than %v: a waiter was not served", f.WaitMax, servedWait)
	}
}

// caught: a known-unsafe setup, where the checker must find overlaps.
func caught(t *testing.T, f Figures) {
	if f.Faults == 0 {
		t.Skip("no fault was injected within the run's duration")
	}
	if len(f.Check.Overlaps) == 0 || f.Check.OK() {
		t.Errorf("known-unsafe setup, yet the checker found no overlap: %s", f.Check)
	}
	if f.Check.Linearizable != "illegal" {
		t.Errorf("known-unsafe setup, yet porcupine found the lock history linearizable (%s)", f.Check.Linearizable)
	}
}

// twoProxies is a fault: again and again until the run ends, two nodes
// picked at random get proxy mode m for hold, then are healed.
func twoProxies(ps []*Proxy, what string, m ProxyMode, dropP float64, hold time.Duration) func(context.Context, *Run) error {
	return func(ctx context.Context, r *Run) error {
		for Sleep(ctx, 300*time.Millisecond) {
			i := r.Inject(what)
			bad := Pick(len(ps), 2)
			for _, j := range bad {
				ps[j].SetMode(m, 0, dropP)
			}
			Sleep(ctx, hold)
			for _, j := range bad {
				ps[j].SetMode(Pass, 0, 0)
			}
			r.Heal(i)
		}
		return nil
	}
}

var scenarios = []Case{
	{Name: "redlock/kill-minority", Short: true, Check: Safe, Build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 5)
		return Scenario{
			Backend: "Redlock, 5 nodes", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: Workers(3, 2, redisDSN(addrsOf(servers)), redlockTTL, false),
			Fault: func(ctx context.Context, r *Run) error {
				for Sleep(ctx, 300*time.Millisecond) {
					down := Pick(5, 2)
					i := r.Inject("kill -9 2 of 5 nodes")
					for _, j := range down {
						servers[j].Kill()
					}
					// The delayed-restart rule: out of service for a TTL.
					Sleep(ctx, redlockTTL+200*time.Millisecond)
					for _, j := range down {
						servers[j].Restart()
					}
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{Name: "redlock/pause-minority", Check: Safe, Build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 5)
		return Scenario{
			Backend: "Redlock, 5 nodes", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: Workers(3, 2, redisDSN(addrsOf(servers)), redlockTTL, false),
			Fault: func(ctx context.Context, r *Run) error {
				for Sleep(ctx, 300*time.Millisecond) {
					down := Pick(5, 2)
					i := r.Inject("SIGSTOP 2 of 5 nodes")
					for _, j := range down {
						servers[j].Pause()
					}
					Sleep(ctx, time.Second)
					for _, j := range down {
						servers[j].Resume()
					}
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{Name: "redlock/restart-one-empty", Check: Safe, Build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 5)
		return Scenario{
			Backend: "Redlock, 5 nodes", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: Workers(3, 2, redisDSN(addrsOf(servers)), redlockTTL, false),
			Fault: func(ctx context.Context, r *Run) error {
				for Sleep(ctx, time.Second) {
					i := r.Inject("restart 1 of 5 nodes empty")
					servers[rand.IntN(5)].Restart()
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{Name: "redlock/queue-restart-kill-head", Short: true, Check: served, Build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 5)
		ws := Workers(queueWorkers, 2, redisDSN(addrsOf(servers)), redlockTTL, false)
		for i := range ws {
			ws[i].Keys = Keys[:1] // one key: the other clients always queued on it
		}
		return Scenario{
			Backend: "Redlock, 5 nodes, one key", Safe: true, Model: LossReportedFirst,
			Promise: redlockPromise + " Waiters queued on the key keep being served when a node restarts empty (its " +
				"queue lost) and when the head waiter's process dies (its place runs out after driver.QueueHold).",
			Workers: ws,
			Fault: func(ctx context.Context, r *Run) error {
				kills := 0
				for tick := 0; Sleep(ctx, time.Second); tick++ {
					i := r.Inject("restart 1 of 5 nodes empty, waiters queued")
					servers[rand.IntN(5)].Restart()
					r.Heal(i)
					if tick%3 != 0 || kills == queueKills {
						continue
					}
					if w, ok := r.HeadWaiter(Keys[0]); ok {
						i := r.Inject("kill -9 the head waiter's process")
						r.KillWorker(w)
						r.Heal(i)
						kills++
					}
				}
				return nil
			},
		}
	}},
	{Name: "redlock/proxy-latency", Check: Safe, Build: func(t *testing.T) Scenario {
		ps := proxies(t, addrsOf(testserver.StartRedis(t, 5)))
		return Scenario{
			Backend: "Redlock, 5 nodes behind proxies", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: Workers(3, 2, redisDSN(proxyAddrs(ps)), redlockTTL, false),
			Fault: func(ctx context.Context, r *Run) error {
				for Sleep(ctx, 300*time.Millisecond) {
					i := r.Inject("+30 ms on every node, +300 ms on 2")
					slow := Pick(5, 2)
					for j, p := range ps {
						lat := 30 * time.Millisecond
						if j == slow[0] || j == slow[1] {
							lat = 300 * time.Millisecond // beyond the node timeout (TTL/10)
						}
						p.SetMode(Delay, lat, 0)
					}
					Sleep(ctx, time.Second)
					for _, p := range ps {
						p.SetMode(Pass, 0, 0)
					}
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{Name: "redlock/proxy-drop", Check: Safe, Build: func(t *testing.T) Scenario {
		ps := proxies(t, addrsOf(testserver.StartRedis(t, 5)))
		return Scenario{
			Backend: "Redlock, 5 nodes behind proxies", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: Workers(3, 2, redisDSN(proxyAddrs(ps)), redlockTTL, false),
			Fault:   twoProxies(ps, "reset 5% of chunks' connections on 2 nodes", Drop, 0.05, time.Second),
		}
	}},
	{Name: "redlock/partition-minority", Check: Safe, Build: func(t *testing.T) Scenario {
		ps := proxies(t, addrsOf(testserver.StartRedis(t, 5)))
		return Scenario{
			Backend: "Redlock, 5 nodes behind proxies", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: Workers(3, 2, redisDSN(proxyAddrs(ps)), redlockTTL, false),
			Fault:   twoProxies(ps, "blackhole 2 of 5 nodes", Blackhole, 0, 1500*time.Millisecond),
		}
	}},
	{Name: "redis/holder-paused-fenced", Short: true, Check: Fenced, Build: func(t *testing.T) Scenario {
		dsn := redisDSN(addrsOf(testserver.StartRedis(t, 1)))
		ttl := time.Second
		return Scenario{
			Backend: "Redis, 1 node, fencing", Model: LossReportedFirst,
			Promise: "A holder paused past its TTL loses the lock while it cannot know (outside the assumptions); " +
				"fencing tokens make the resource refuse its late writes.",
			Workers: append(Workers(2, 2, dsn, ttl, true), ControlledWorker(dsn, ttl, true)),
			Fault:   PauseHolder,
		}
	}},
	{Name: "redis/restart-empty-single", Check: func(*testing.T, Figures) {}, Build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 1)
		return Scenario{
			Backend: "Redis, 1 node, fencing", Model: LossReportedFirst,
			Promise: "None across a restart without persistence: locks and fencing counters are lost (documented). " +
				"Tokens start again from 1, so the fenced store refuses every write until the new counter passes the old one.",
			Workers: Workers(3, 2, redisDSN(addrsOf(servers)), time.Second, true),
			Fault: func(ctx context.Context, r *Run) error {
				for Sleep(ctx, time.Second) {
					i := r.Inject("restart the node empty")
					servers[0].Restart()
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{Name: "postgres/terminate-backend", Short: true, Check: Fenced, Build: func(t *testing.T) Scenario {
		dsn, ns := pgDSN(t, "")
		db := pgDB(t)
		ws := Workers(3, 2, dsn, 0, true)
		for i := range ws {
			ws[i].Hold = 100 * time.Millisecond // long enough to be caught holding
		}
		return Scenario{
			Backend: "PostgreSQL, fencing, heartbeat 1 s", Model: LossAfterTheFact,
			Promise: "The server frees a killed session's locks at once; the holder sees the loss at its next heartbeat " +
				"(after the fact). Fencing tokens strictly increase; the resource refuses the old holder's writes.",
			Workers: ws,
			Fault: func(ctx context.Context, r *Run) error {
				for Sleep(ctx, 500*time.Millisecond) {
					pids, err := lockHolders(ctx, db, ns)
					if err != nil || len(pids) == 0 {
						continue
					}
					i := r.Inject("pg_terminate_backend of a lock session")
					if _, err := db.ExecContext(ctx, "SELECT pg_terminate_backend($1)", pids[rand.IntN(len(pids))]); err != nil && ctx.Err() == nil {
						return err
					}
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{Name: "postgres/partition", Check: Fenced, Build: func(t *testing.T) Scenario {
		base := testserver.PostgresDSN(t)
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		target := u.Host
		if u.Port() == "" {
			target = net.JoinHostPort(u.Hostname(), "5432")
		}
		p := proxies(t, []string{target})[0]
		dsn, _ := pgDSN(t, p.Addr())
		return Scenario{
			Backend: "PostgreSQL behind a proxy, fencing, heartbeat 1 s", Model: LossAfterTheFact,
			Promise: "Cut off, a holder sees the loss once its heartbeat fails; the server frees its locks when it " +
				"gives up on the connection (keepalive; the proxy does it 1 s into the partition).",
			Workers: Workers(3, 2, dsn, 0, true),
			Fault: func(ctx context.Context, r *Run) error {
				for Sleep(ctx, 500*time.Millisecond) {
					i := r.Inject("blackhole client-server traffic")
					p.SetMode(Blackhole, 0, 0)
					Sleep(ctx, time.Second)
					p.CutServerSide()
					Sleep(ctx, time.Second)
					p.SetMode(Pass, 0, 0)
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	// Known-unsafe setups: the checker must see them fail.
	{Name: "unsafe/redlock-holder-paused", Short: true, Check: caught, Build: func(t *testing.T) Scenario {
		dsn := redisDSN(addrsOf(testserver.StartRedis(t, 3)))
		ttl := time.Second
		return Scenario{
			Backend: "Redlock, 3 nodes, no fencing", Model: LossReportedFirst,
			Promise: "Known-unsafe: a holder paused past its TTL, with no fencing. The checker must find overlaps.",
			Workers: append(Workers(2, 1, dsn, ttl, false), ControlledWorker(dsn, ttl, false)),
			Fault:   PauseHolder,
		}
	}},
	{Name: "unsafe/redlock-majority-restarted", Check: caught, Build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 5)
		dsn := redisDSN(addrsOf(servers))
		return Scenario{
			Backend: "Redlock, 5 nodes", Model: LossReportedFirst,
			Promise: "Known-unsafe: 3 of 5 nodes restarted empty at once while a lock is held (breaks the delayed-restart rule). The checker must find overlaps.",
			Workers: append(Workers(2, 1, dsn, redlockTTL, false), ControlledWorker(dsn, redlockTTL, false)),
			Fault: func(ctx context.Context, r *Run) error {
				for {
					client, key, _, ok := r.Held(ctx)
					if !ok {
						return nil
					}
					i := r.Inject("restart 3 of 5 nodes empty at once")
					for _, j := range Pick(5, 3) {
						servers[j].Restart()
					}
					r.Heal(i)
					wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					r.WaitSection(wctx, client, key, r.At(i))
					cancel()
					r.Controlled().Send("go")
				}
			},
		}
	}},
}

func pgDSN(t *testing.T, hostPort string) (dsn, ns string) {
	base := testserver.PostgresDSN(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if hostPort != "" {
		u.Host = hostPort
	}
	ns = Prefix()
	q := u.Query()
	q.Set("mutexkit_namespace", ns) // fencing is the workers' (mutex.WithFencing), the heartbeat mutex's default
	u.RawQuery = q.Encode()
	return u.String(), ns
}

func pgDB(t *testing.T) *sql.DB {
	db, err := sql.Open("postgres", testserver.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// lockHolders returns the backend pids holding the advisory locks of keys
// in namespace ns.
func lockHolders(ctx context.Context, db *sql.DB, ns string) ([]int, error) {
	var pids []int
	for _, k := range Keys {
		classid, objid := postgres.LockTag(postgres.KeyID(ns, k))
		rows, err := db.QueryContext(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND objsubid = 1 AND classid = $1 AND objid = $2`, int64(classid), int64(objid))
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var pid int
			if err := rows.Scan(&pid); err != nil {
				rows.Close()
				return nil, err
			}
			pids = append(pids, pid)
		}
		rows.Close()
	}
	return pids, nil
}

// TestChaos runs the fault scenarios: a few seconds each, a subset, in
// make test; all of them for CHAOS_DURATION each in make chaos, which also
// sets CHAOS_REPORT to write docs/RELIABILITY.md, with the figures of the
// driver modules' suites run before it (CHAOS_FIGURES).
func TestChaos(t *testing.T) {
	figs := RunCases(t, scenarios)
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		others, err := ReadFigures()
		if err != nil {
			t.Fatal(err)
		}
		ours := map[string]bool{}
		for _, f := range figs {
			ours[f.Scenario] = true
		}
		for _, f := range others {
			if !ours[f.Scenario] {
				figs = append(figs, f)
			}
		}
		if err := WriteReport(path, figs, Duration(t)); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}
}

var _ = fmt.Sprintf
