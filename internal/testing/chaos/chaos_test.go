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
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

func TestMain(m *testing.M) {
	if IsWorker() {
		WorkerMain()
	}
	os.Exit(m.Run())
}

// full reports whether this is the full run (make chaos): CHAOS_DURATION
// set. Otherwise a short run of a few scenarios goes with make test.
func full() bool { return os.Getenv("CHAOS_DURATION") != "" }

func duration(t *testing.T) time.Duration {
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CHAOS_DURATION: %v", err)
		}
		return d
	}
	return 3 * time.Second
}

// maxOps bounds each client's sections.
func maxOps() int {
	if full() {
		return 1_000_000
	}
	return 300
}

var keys = []string{"k0", "k1", "k2"}

func workers(n, clients int, dsn string, ttl time.Duration, fencing bool) []WorkerConfig {
	var ws []WorkerConfig
	for range n {
		ws = append(ws, WorkerConfig{DSN: dsn, Keys: keys, Clients: clients, TTL: ttl,
			Hold: 5 * time.Millisecond, Ops: maxOps(), Fencing: fencing})
	}
	return ws
}

func controlled(dsn string, ttl time.Duration, fencing bool) WorkerConfig {
	return WorkerConfig{DSN: dsn, Keys: keys[:1], Clients: 1, TTL: ttl, Ops: 1000, Fencing: fencing, Controlled: true}
}

func prefix() string { return "chaos" + driver.NewOwner().String()[:10] }

func redisDSN(addrs []string) string {
	return "redis://" + strings.Join(addrs, ",") + "?prefix=" + prefix()
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

// sleep waits d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// pick returns k distinct random indexes below n.
func pick(n, k int) []int { return rand.Perm(n)[:k] }

const redlockTTL = 2 * time.Second

const redlockPromise = "No two holders: a quorum (3 of 5) holds each lock; tolerates 2 nodes down, slow or cut off, " +
	"and nodes restarted empty one at a time. Loss reported before the lease can lapse. No fencing."

// pauseHolder pauses the controlled holder with SIGSTOP past its TTL,
// until another client has held its key, then resumes it and lets it write.
func pauseHolder(ctx context.Context, r *Run) error {
	for {
		client, key, _, ok := r.Held(ctx)
		if !ok {
			return nil
		}
		w := r.Controlled()
		if err := w.Signal(syscall.SIGSTOP); err != nil {
			return err
		}
		i := r.Inject("holder SIGSTOP")
		wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		r.WaitSection(wctx, client, key, r.At(i))
		cancel()
		if err := w.Signal(syscall.SIGCONT); err != nil {
			return err
		}
		r.Heal(i)
		w.Send("go")
	}
}

type scenario struct {
	name  string
	short bool // also in the short run of make test
	build func(t *testing.T) Scenario
	check func(t *testing.T, f Figures)
}

func safe(t *testing.T, f Figures) {
	if len(f.Check.Overlaps) > 0 || len(f.Check.Regressions) > 0 || f.Check.Linearizable == "illegal" {
		t.Errorf("the driver promises safety under this fault, but: %s", f.Check)
	}
	if f.Sections == 0 {
		t.Errorf("no section completed: %v", f.ErrSample)
	}
}

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
	safe(t, f)
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

func fenced(t *testing.T, f Figures) {
	if len(f.Check.Regressions) > 0 {
		t.Errorf("tokens failed to increase: %s", f.Check)
	}
	// Fencing's promise: of two overlapping holders, the older one's write
	// sent after the newer one's first write was answered is refused. (Its
	// writes that all landed earlier did no harm: the store saw tokens in
	// order.)
	for _, o := range f.Check.Overlaps {
		old, fresh := o.A, o.B
		if old.Token > fresh.Token {
			old, fresh = fresh, old
		}
		if old.Token != 0 && old.LastWriteCall > fresh.FirstWriteRet && !old.LastRefused {
			t.Errorf("fencing let a stale write through: %s (token %d) wrote after %s (token %d) had written", old.Client, old.Token, fresh.Client, fresh.Token)
		}
	}
}

// twoProxies is a fault: again and again until the run ends, two nodes
// picked at random get proxy mode m for hold, then are healed.
func twoProxies(ps []*Proxy, what string, m ProxyMode, dropP float64, hold time.Duration) func(context.Context, *Run) error {
	return func(ctx context.Context, r *Run) error {
		for sleep(ctx, 300*time.Millisecond) {
			i := r.Inject(what)
			bad := pick(len(ps), 2)
			for _, j := range bad {
				ps[j].SetMode(m, 0, dropP)
			}
			sleep(ctx, hold)
			for _, j := range bad {
				ps[j].SetMode(Pass, 0, 0)
			}
			r.Heal(i)
		}
		return nil
	}
}

var scenarios = []scenario{
	{name: "redlock/kill-minority", short: true, check: safe, build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 5)
		return Scenario{
			Backend: "Redlock, 5 nodes", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: workers(3, 2, redisDSN(addrsOf(servers)), redlockTTL, false),
			Fault: func(ctx context.Context, r *Run) error {
				for sleep(ctx, 300*time.Millisecond) {
					down := pick(5, 2)
					i := r.Inject("kill -9 2 of 5 nodes")
					for _, j := range down {
						servers[j].Kill()
					}
					// The delayed-restart rule: out of service for a TTL.
					sleep(ctx, redlockTTL+200*time.Millisecond)
					for _, j := range down {
						servers[j].Restart()
					}
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{name: "redlock/pause-minority", check: safe, build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 5)
		return Scenario{
			Backend: "Redlock, 5 nodes", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: workers(3, 2, redisDSN(addrsOf(servers)), redlockTTL, false),
			Fault: func(ctx context.Context, r *Run) error {
				for sleep(ctx, 300*time.Millisecond) {
					down := pick(5, 2)
					i := r.Inject("SIGSTOP 2 of 5 nodes")
					for _, j := range down {
						servers[j].Pause()
					}
					sleep(ctx, time.Second)
					for _, j := range down {
						servers[j].Resume()
					}
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{name: "redlock/restart-one-empty", check: safe, build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 5)
		return Scenario{
			Backend: "Redlock, 5 nodes", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: workers(3, 2, redisDSN(addrsOf(servers)), redlockTTL, false),
			Fault: func(ctx context.Context, r *Run) error {
				for sleep(ctx, time.Second) {
					i := r.Inject("restart 1 of 5 nodes empty")
					servers[rand.IntN(5)].Restart()
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{name: "redlock/queue-restart-kill-head", short: true, check: served, build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 5)
		ws := workers(queueWorkers, 2, redisDSN(addrsOf(servers)), redlockTTL, false)
		for i := range ws {
			ws[i].Keys = keys[:1] // one key: the other clients always queued on it
		}
		return Scenario{
			Backend: "Redlock, 5 nodes, one key", Safe: true, Model: LossReportedFirst,
			Promise: redlockPromise + " Waiters queued on the key keep being served when a node restarts empty (its " +
				"queue lost) and when the head waiter's process dies (its place runs out after driver.QueueHold).",
			Workers: ws,
			Fault: func(ctx context.Context, r *Run) error {
				kills := 0
				for tick := 0; sleep(ctx, time.Second); tick++ {
					i := r.Inject("restart 1 of 5 nodes empty, waiters queued")
					servers[rand.IntN(5)].Restart()
					r.Heal(i)
					if tick%3 != 0 || kills == queueKills {
						continue
					}
					if w, ok := r.HeadWaiter(keys[0]); ok {
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
	{name: "redlock/proxy-latency", check: safe, build: func(t *testing.T) Scenario {
		ps := proxies(t, addrsOf(testserver.StartRedis(t, 5)))
		return Scenario{
			Backend: "Redlock, 5 nodes behind proxies", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: workers(3, 2, redisDSN(proxyAddrs(ps)), redlockTTL, false),
			Fault: func(ctx context.Context, r *Run) error {
				for sleep(ctx, 300*time.Millisecond) {
					i := r.Inject("+30 ms on every node, +300 ms on 2")
					slow := pick(5, 2)
					for j, p := range ps {
						lat := 30 * time.Millisecond
						if j == slow[0] || j == slow[1] {
							lat = 300 * time.Millisecond // beyond the node timeout (TTL/10)
						}
						p.SetMode(Delay, lat, 0)
					}
					sleep(ctx, time.Second)
					for _, p := range ps {
						p.SetMode(Pass, 0, 0)
					}
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{name: "redlock/proxy-drop", check: safe, build: func(t *testing.T) Scenario {
		ps := proxies(t, addrsOf(testserver.StartRedis(t, 5)))
		return Scenario{
			Backend: "Redlock, 5 nodes behind proxies", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: workers(3, 2, redisDSN(proxyAddrs(ps)), redlockTTL, false),
			Fault:   twoProxies(ps, "reset 5% of chunks' connections on 2 nodes", Drop, 0.05, time.Second),
		}
	}},
	{name: "redlock/partition-minority", check: safe, build: func(t *testing.T) Scenario {
		ps := proxies(t, addrsOf(testserver.StartRedis(t, 5)))
		return Scenario{
			Backend: "Redlock, 5 nodes behind proxies", Safe: true, Model: LossReportedFirst, Promise: redlockPromise,
			Workers: workers(3, 2, redisDSN(proxyAddrs(ps)), redlockTTL, false),
			Fault:   twoProxies(ps, "blackhole 2 of 5 nodes", Blackhole, 0, 1500*time.Millisecond),
		}
	}},
	{name: "redis/holder-paused-fenced", short: true, check: fenced, build: func(t *testing.T) Scenario {
		dsn := redisDSN(addrsOf(testserver.StartRedis(t, 1)))
		ttl := time.Second
		return Scenario{
			Backend: "Redis, 1 node, fencing", Model: LossReportedFirst,
			Promise: "A holder paused past its TTL loses the lock while it cannot know (outside the assumptions); " +
				"fencing tokens make the resource refuse its late writes.",
			Workers: append(workers(2, 2, dsn, ttl, true), controlled(dsn, ttl, true)),
			Fault:   pauseHolder,
		}
	}},
	{name: "redis/restart-empty-single", check: func(*testing.T, Figures) {}, build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 1)
		return Scenario{
			Backend: "Redis, 1 node, fencing", Model: LossReportedFirst,
			Promise: "None across a restart without persistence: locks and fencing counters are lost (documented). " +
				"Tokens start again from 1, so the fenced store refuses every write until the new counter passes the old one.",
			Workers: workers(3, 2, redisDSN(addrsOf(servers)), time.Second, true),
			Fault: func(ctx context.Context, r *Run) error {
				for sleep(ctx, time.Second) {
					i := r.Inject("restart the node empty")
					servers[0].Restart()
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	{name: "postgres/terminate-backend", short: true, check: fenced, build: func(t *testing.T) Scenario {
		dsn, ns := pgDSN(t, "")
		db := pgDB(t)
		ws := workers(3, 2, dsn, 0, true)
		for i := range ws {
			ws[i].Hold = 100 * time.Millisecond // long enough to be caught holding
		}
		return Scenario{
			Backend: "PostgreSQL, fencing, heartbeat 1 s", Model: LossAfterTheFact,
			Promise: "The server frees a killed session's locks at once; the holder sees the loss at its next heartbeat " +
				"(after the fact). Fencing tokens strictly increase; the resource refuses the old holder's writes.",
			Workers: ws,
			Fault: func(ctx context.Context, r *Run) error {
				for sleep(ctx, 500*time.Millisecond) {
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
	{name: "postgres/partition", check: fenced, build: func(t *testing.T) Scenario {
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
			Workers: workers(3, 2, dsn, 0, true),
			Fault: func(ctx context.Context, r *Run) error {
				for sleep(ctx, 500*time.Millisecond) {
					i := r.Inject("blackhole client-server traffic")
					p.SetMode(Blackhole, 0, 0)
					sleep(ctx, time.Second)
					p.CutServerSide()
					sleep(ctx, time.Second)
					p.SetMode(Pass, 0, 0)
					r.Heal(i)
				}
				return nil
			},
		}
	}},
	// Known-unsafe setups: the checker must see them fail.
	{name: "unsafe/redlock-holder-paused", short: true, check: caught, build: func(t *testing.T) Scenario {
		dsn := redisDSN(addrsOf(testserver.StartRedis(t, 3)))
		ttl := time.Second
		return Scenario{
			Backend: "Redlock, 3 nodes, no fencing", Model: LossReportedFirst,
			Promise: "Known-unsafe: a holder paused past its TTL, with no fencing. The checker must find overlaps.",
			Workers: append(workers(2, 1, dsn, ttl, false), controlled(dsn, ttl, false)),
			Fault:   pauseHolder,
		}
	}},
	{name: "unsafe/redlock-majority-restarted", check: caught, build: func(t *testing.T) Scenario {
		servers := testserver.StartRedis(t, 5)
		dsn := redisDSN(addrsOf(servers))
		return Scenario{
			Backend: "Redlock, 5 nodes", Model: LossReportedFirst,
			Promise: "Known-unsafe: 3 of 5 nodes restarted empty at once while a lock is held (breaks the delayed-restart rule). The checker must find overlaps.",
			Workers: append(workers(2, 1, dsn, redlockTTL, false), controlled(dsn, redlockTTL, false)),
			Fault: func(ctx context.Context, r *Run) error {
				for {
					client, key, _, ok := r.Held(ctx)
					if !ok {
						return nil
					}
					i := r.Inject("restart 3 of 5 nodes empty at once")
					for _, j := range pick(5, 3) {
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
	ns = prefix()
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
	for _, k := range keys {
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
// sets CHAOS_REPORT to write docs/RELIABILITY.md.
func TestChaos(t *testing.T) {
	d := duration(t)
	var figs []Figures
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			if !full() && !sc.short {
				t.Skip("full run only (make chaos, or set CHAOS_DURATION)")
			}
			s := sc.build(t)
			s.Name = sc.name
			f := Execute(t, s, d)
			t.Log(f.Summary())
			sc.check(t, f)
			figs = append(figs, f)
		})
	}
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		var smoke []string
		for _, sc := range scenarios {
			if sc.short {
				smoke = append(smoke, sc.name)
			}
		}
		if err := WriteReport(path, figs, d, smoke); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}
}

var _ = fmt.Sprintf
