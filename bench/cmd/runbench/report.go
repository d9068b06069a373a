package main

import (
	_ "embed"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// notes is the hand-written analysis the page ends with: what the profiles
// say about the misses. Keep it in step with the figures.
//
//go:embed notes.md
var notes string

// keyValues splits a benchmark name into its key=value parts.
func keyValues(name string) map[string]string {
	kv := map[string]string{}
	for _, p := range strings.Split(name, "/")[1:] {
		if k, v, ok := strings.Cut(p, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// scenario returns the names of one benchmark function, in run order.
func (r *results) scenario(fn string) []string {
	var names []string
	for _, n := range r.order {
		if strings.HasPrefix(n, "Benchmark"+fn+"/") {
			names = append(names, n)
		}
	}
	return names
}

type table struct {
	head []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(b *strings.Builder) {
	b.WriteString("| " + strings.Join(t.head, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat(" --- |", len(t.head)) + "\n")
	for _, row := range t.rows {
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	b.WriteString("\n")
}

// fig formats a median, or a dash when there is none.
func (r *results) fig(name, unit, format string, scale float64) string {
	v, ok := r.median(name, unit)
	if !ok {
		return "–"
	}
	return fmt.Sprintf(format, v*scale)
}

// ratio formats num/den of two medians.
func (r *results) ratio(num, den, unit string) string {
	a, ok1 := r.median(num, unit)
	b, ok2 := r.median(den, unit)
	if !ok1 || !ok2 || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func report(cfg config, m machine, r *results, stat string) string {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (bench/cmd/runbench) on %s; do not edit by hand. The analysis at the end is\n"+
		"bench/cmd/runbench/notes.md; the raw results are bench/%s, in benchstat's format.\n\n", m.started.Format("2006-01-02 15:04 MST"), cfg.raw)
	if m.dirty != "" {
		fmt.Fprintf(&b, "**Provisional:** the library had uncommitted changes when this ran (%s): the figures are of\n"+
			"that working tree, not of commit %s alone.\n\n", m.dirty, m.commit)
	}

	if median, highest, busy := m.busy(); busy {
		fmt.Fprintf(&b, "**Busy machine:** the 1-minute load average was %.1f (median) and up to %.1f on %d CPUs while this ran,\n"+
			"well above the two runnable threads the benchmarks themselves make: other work competed for the CPUs, and\n"+
			"the figures say more about it than about the libraries. Run make bench again on a quiet machine.\n\n", median, highest, m.nproc)
	}
	b.WriteString("## Targets\n\n")
	t := table{head: []string{"target", "figures (medians)", "", "why missed"}}
	for _, tg := range targets(r) {
		mark := map[string]string{"met": "**met**", "missed": "**missed**"}[tg.state]
		if mark == "" {
			mark = tg.state
		}
		t.add(tg.goal, tg.figure, mark, tg.because)
	}
	t.write(&b)
	b.WriteString("Reasons in figures only; the analysis of each miss is under [Analysis](#analysis). A \"no slower\n" +
		"than\" target counts as met when ours' median is lower, or when the rounds cannot tell the two apart\n" +
		"(Mann-Whitney U test, p >= 0.05, the test benchstat applies below).\n\n")

	writeMachine(&b, cfg, m)
	writeUncontended(&b, r)
	writeParallel(&b, r)
	writeHandoff(&b, r)
	writePass(&b, r)
	writeManyKeys(&b, r)
	writeMiddleware(&b, r)
	writeProblems(&b, r)

	b.WriteString("## Analysis\n\n")
	b.WriteString(strings.TrimSpace(notes) + "\n\n")

	b.WriteString("## benchstat\n\n")
	b.WriteString("Medians with 95% confidence intervals over the rounds, peers and floors compared with ours\n" +
		"(`~` where the difference may be noise).\n\n```\n" + strings.TrimSpace(stat) + "\n```\n")
	return b.String()
}

func writeMachine(b *strings.Builder, cfg config, m machine) {
	b.WriteString("## Machine and method\n\n")
	t := table{head: []string{"", ""}}
	t.add("CPU", fmt.Sprintf("%s, %d logical CPUs (nproc)", m.cpu, m.nproc))
	t.add("kernel", m.kernel)
	t.add("Go", m.goVersion)
	t.add("Redis", m.redis+", started per benchmark process, no persistence, loopback")
	t.add("PostgreSQL", m.postgres+", the shared server at MUTEXKIT_POSTGRES_DSN, loopback")
	t.add("MySQL/MariaDB", m.mysql+", the shared server at MUTEXKIT_MYSQL_DSN, loopback, not pinned")
	t.add("commit", m.commit)
	pin := "none (taskset missing or one CPU)"
	if m.clientCPUs != "" || m.serverCPUs != "" {
		pin = fmt.Sprintf("benchmark process on CPU %s (so GOMAXPROCS=1), redis-server processes and this run's PostgreSQL backends on CPU %s", m.clientCPUs, m.serverCPUs)
	}
	t.add("pinning", pin)
	median, highest, _ := m.busy()
	t.add("load average", fmt.Sprintf("%s before, %s after (1, 5, 15 min); 1 min during the rounds: median %.1f, highest %.1f. "+
		"The benchmarks make about 2; more is other work, and shows up as noise", m.loadBefore, m.loadAfter, median, highest))
	t.add("run time", m.elapsed.Round(time.Second).String())
	t.write(b)
	fmt.Fprintf(b, "Command: `make bench`, which runs `cd bench && go run ./cmd/runbench -rounds %d -out ../docs/BENCHMARKS.md`.\n\n", cfg.rounds)
	b.WriteString("Every benchmark runs once per round, in a shuffled order, in a process of its own (fresh\n" +
		"redis-server processes each time), for " + fmt.Sprint(cfg.rounds) + " rounds; every figure below is the median over the rounds. Uncontended,\n" +
		fmt.Sprintf("parallel and middleware benchmarks run for 1 s a round, handoffs %d grants (%d for redsync's defaults),\n", handoffsPerRound, handoffsPerRoundPolling) +
		"many keys once. All libraries get\n" +
		"the same lease length (15 s, ours' default) and redigo/go-redis pools of up to 64 connections per node\n" +
		"(redigo keeps none idle by default, which would dial per call). Ratios: peer / ours for times (above 1: ours\n" +
		"is faster), ours / floor, ours / peer for throughput.\n\n")
}

func writeUncontended(b *strings.Builder, r *results) {
	b.WriteString("## Uncontended TryLock+Unlock\n\n" +
		"One goroutine takes a free key and gives it back. Floors: raw redigo `SET NX PX` + `EVALSHA`\n" +
		"compare-and-delete on one pooled connection; raw `database/sql` prepared `pg_try_advisory_lock` +\n" +
		"`pg_advisory_unlock` on a pinned connection; raw `database/sql` (go-sql-driver) prepared\n" +
		"`GET_LOCK(name, 0)` + `RELEASE_LOCK(name)` on one `*sql.Conn`.\n" +
		goRedisUncontendedText +
		"\n**ours-before** is ours as it was before the wait queues (runbench -before-rev, ecb0050 by default), built\n" +
		"from git and run in the same rounds, so that \"no slower than before\" compares two figures of one machine.\n\n")
	t := table{head: []string{"backend", "impl", "time/op", "B/op", "allocs/op", "peer / ours", "ours / floor"}}
	for _, n := range r.scenario("Uncontended") {
		kv := keyValues(n)
		ours := bname("Uncontended", kv["backend"], "ours")
		vsOurs, vsFloor := "", ""
		switch {
		case kv["backend"] == cluster3: // issue 15: beside ours-goredis on one node
			vsOurs = r.ratio(n, bname("Uncontended", "redis1", "ours-goredis"), nsOp) + " (of ours-goredis, 1 node)"
		case kv["impl"] == "floor":
			vsFloor = r.ratio(ours, n, nsOp)
		case strings.HasPrefix(kv["impl"], "ours"):
			if kv["impl"] != "ours" {
				vsOurs = r.ratio(n, ours, nsOp) + " (of ours)"
			}
		default:
			vsOurs = r.ratio(n, ours, nsOp)
		}
		t.add(backendLabel(kv["backend"]), kv["impl"], r.fig(n, nsOp, "%.1f µs", 1e-3), r.fig(n, "B/op", "%.0f", 1),
			r.fig(n, allocsOp, "%.0f", 1), vsOurs, vsFloor)
	}
	t.write(b)
}

func writeParallel(b *strings.Builder, r *results) {
	b.WriteString("## 64 goroutines on distinct keys\n\n" +
		"64 goroutines of one client, each taking and giving back a key of its own as fast as it can.\n" +
		goRedisParallelText + "\n")
	t := table{head: []string{"backend", "impl", "ops/s", "ours / impl", "allocs/op"}}
	for _, n := range r.scenario("Parallel") {
		kv := keyValues(n)
		vs := ""
		if v, ok := parallelVs(r, n, kv); ok {
			vs = v
		} else if kv["impl"] != "ours" {
			vs = r.ratio(bname("Parallel", kv["backend"], "ours"), n, opsSec)
		}
		t.add(backendLabel(kv["backend"]), kv["impl"], r.fig(n, opsSec, "%.0f", 1), vs, r.fig(n, allocsOp, "%.0f", 1))
	}
	t.write(b)
}

func writeHandoff(b *strings.Builder, r *results) {
	b.WriteString("## Contended handoff\n\n" +
		"N clients (waiters=N; each with connections of its own, like N pods) on one key: each holder keeps it\n" +
		"1 ms, releases it and calls Lock again at once, so N-1 are always waiting (issue 14's setup). One op is one\n" +
		fmt.Sprintf("grant; each run makes %d of them (redsync-default %d), after a warm-up in which each client waited for the key once.\n", handoffsPerRound, handoffsPerRoundPolling) +
		"Latency: from the start of a release to the next Lock returning. redsync-default is redsync's 50-250 ms\n" +
		"retry delay; redsync-1to5ms gives it a jittered 1-5 ms delay and unlimited tries. Holding 1 ms caps\n" +
		"handoffs/s near 1,000.\n\n" +
		"Server work per handoff: everything the clients made the servers do from the end of the warm-up to the\n" +
		"last grant, divided by the grants, waiters' attempts and wake-ups included. On Redis the **commands the clients\n" +
		"sent** (SET, EVALSHA/EVAL, PUBLISH, (UN)SUBSCRIBE, PING and anything else), summed over the nodes, read\n" +
		"from each server's MONITOR stream, which tells them from the **commands scripts ran** (shown apart;\n" +
		"INFO commandstats counts both alike); on PostgreSQL the **transactions** of the benchmark's own database\n" +
		"(" + "`mutexkit_bench`" + ": pg_stat_database xact_commit + xact_rollback, read after the idle clients have reported\n" +
		"the warm-up, 10.5 s, and after they closed, which reports the rest; the count also takes in the N-1\n" +
		"waiters giving up and the clients closing at the end); on MySQL/MariaDB the **statements** clients sent the\n" +
		"server (its global `Questions` status counter, prepared executions included, from the end of the warm-up\n" +
		"to the last grant). PostgreSQL and MySQL run 8 and 32 waiters only: each client holds two connections or\n" +
		"more and the servers allow 100 and 151.\n\n" +
		"**Longest passed over**: for each Lock, the grants to other clients between its call and its return,\n" +
		"less the N-1 that arrival order allows (every other client may be ahead of it once); the largest over the\n" +
		"run's Locks, then the median of the rounds. 0 is first come, first served; a Lock that races the queue at\n" +
		"the moment it asks can show 1 or 2. **Regrants**: the share of grants that went back to the client that\n" +
		"had just released, which in arrival order is last in line: a handoff that is no handoff (redsync's\n" +
		"releaser asks again at once and usually wins against waiters asleep in their retry delay).\n" +
		"**before** is the same benchmark on the code before the wait queue\n" +
		"(bench/results/before-queue.txt, median of its rounds).\n\n")
	t := table{head: []string{"backend", "waiters", "impl", "median", "p99", "handoffs/s", "server work/handoff",
		"scripts' commands/handoff", "longest passed over", "regrants", "median: impl / ours", "before: median, work/handoff, passed over"}}
	for _, n := range r.scenario("Handoff") {
		kv := keyValues(n)
		vs := ""
		if kv["impl"] != "ours" {
			vs = r.ratio(n, hname(kv["backend"], atoi(kv["waiters"]), "ours"), p50)
		}
		unit, label := cmdsHandoff, " cmds"
		if _, ok := r.median(n, xactsHandoff); ok {
			unit, label = xactsHandoff, " xacts"
		}
		if _, ok := r.median(n, stmtsHandoff); ok {
			unit, label = stmtsHandoff, " stmts"
		}
		work := r.fig(n, unit, "%.1f"+label, 1)
		before := "–"
		if v, ok := r.before.medianOf(n, p50); ok {
			before = fmt.Sprintf("%.0f µs", v)
			if w, ok := r.before.medianOf(n, unit); ok {
				before += fmt.Sprintf(", %.1f%s", w, label)
			}
			if pm, ok := r.before.medianOf(n, passedMax); ok {
				before += fmt.Sprintf(", %.0f", pm)
			}
		}
		t.add(backendLabel(kv["backend"]), kv["waiters"], kv["impl"], r.fig(n, p50, "%.0f µs", 1), r.fig(n, p99, "%.0f µs", 1),
			r.fig(n, handoffs, "%.0f", 1), work, r.fig(n, scriptCmdsHandoff, "%.1f", 1), r.fig(n, passedMax, "%.0f", 1), r.fig(n, "regrants-%", "%.0f%%", 1), vs, before)
	}
	t.write(b)
}

func writePass(b *strings.Builder, r *results) {
	b.WriteString("## Handoff to a waiting client\n\n" +
		fmt.Sprintf("%d clients on one key (one Redis node, issue 8's setup): each holder keeps it 1 ms, releases it and asks\n", passClients) +
		"again only once another client took it, so every grant goes to a client that was waiting (no regrants).\n" +
		"Latency and server work as in the table above: how long a waiting client waits once the key is free, and\n" +
		"what it costs the server.\n\n")
	t := table{head: []string{"backend", "impl", "median", "p99", "handoffs/s", "commands sent/handoff", "scripts' commands/handoff", "median: impl / ours"}}
	for _, n := range r.scenario("Pass") {
		kv := keyValues(n)
		vs := ""
		if kv["impl"] != "ours" {
			vs = r.ratio(n, pname(kv["backend"], "ours"), p50)
		}
		t.add(backendLabel(kv["backend"]), kv["impl"], r.fig(n, p50, "%.0f µs", 1), r.fig(n, p99, "%.0f µs", 1),
			r.fig(n, handoffs, "%.0f", 1), r.fig(n, cmdsHandoff, "%.1f", 1), r.fig(n, scriptCmdsHandoff, "%.1f", 1), vs)
	}
	t.write(b)
}

// atoi is strconv.Atoi for names this program made: 0 if not a number.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func writeManyKeys(b *strings.Builder, r *results) {
	b.WriteString("## Many keys held\n\n" +
		"One process takes the keys (32 goroutines, TTL 3 s; a failed attempt is tried again, up to 5 times),\n" +
		"holds them for two renewal intervals (a third of the TTL each) while their traffic is counted, then\n" +
		"releases them. Memory is Go heap plus goroutine stacks per key, after a collection. Ours is opened from a\n" +
		"DSN, as users do (calls pipelined over one connection per node): its round trips are renewal batches seen\n" +
		"by each server, runs of scripts set apart by a quarter interval of quiet (polled every 5 ms; the window\n" +
		"starts in the quiet after a batch). redsync-watchdog is what a redsync user writes, having no renewal of\n" +
		"its own: a goroutine per lock calling Extend every third of the TTL; its round trips are counted on its\n" +
		"connections. Renewals are the scripts the servers ran; connections are those open on each server.\n" +
		"PostgreSQL holds its keys on sessions, with no renewals: its figure is the backends this process has open.\n\n")
	t := table{head: []string{"backend", "keys", "impl", "memory/key", "goroutines", "connections/node",
		"renewal round trips/node/interval", "renewals/s/node", "acquire time (retries)", "lost"}}
	for _, n := range r.scenario("ManyKeys") {
		kv := keyValues(n)
		connsFig := r.fig(n, conns, "%.0f", 1)
		if connsFig == "–" {
			connsFig = r.fig(n, "conns/node", "%.0f", 1)
		}
		rts := r.fig(n, batches, "%.2f", 1)
		if rts == "–" {
			rts = r.fig(n, rtPerIntv, "%.0f", 1)
		}
		t.add(backendLabel(kv["backend"]), kv["keys"], kv["impl"], r.fig(n, "mem-B/key", "%.0f B", 1), r.fig(n, "goroutines", "%.0f", 1),
			connsFig, rts, r.fig(n, "renewals/s/node", "%.0f", 1),
			r.fig(n, "acquire-ms", "%.0f ms", 1)+" ("+r.fig(n, "acquire-retries", "%.0f", 1)+")", r.fig(n, "lost", "%.0f", 1))
	}
	t.write(b)
}

func writeMiddleware(b *strings.Builder, r *results) {
	b.WriteString("## Middleware stack\n\n" +
		"Uncontended TryLock+Unlock through Logging (records at Debug, handler at Info), Tracing, Metrics and\n" +
		"Retry: with no-op providers, and with the OpenTelemetry SDK recording (spans dropped at the end, a manual\n" +
		"metric reader). `cd middleware && go test -bench .` in the library breaks it down per middleware.\n\n")
	t := table{head: []string{"backend", "stack", "time/op", "B/op", "allocs/op", "over none"}}
	for _, n := range r.scenario("Middleware") {
		kv := keyValues(n)
		none := "BenchmarkMiddleware/backend=" + kv["backend"] + "/stack=none"
		over := ""
		if kv["stack"] != "none" {
			a, ok1 := r.median(n, nsOp)
			z, ok2 := r.median(none, nsOp)
			if ok1 && ok2 {
				over = fmt.Sprintf("%+.1f µs (%+.0f%%)", (a-z)/1e3, (a/z-1)*100)
			}
		}
		t.add(backendLabel(kv["backend"]), kv["stack"], r.fig(n, nsOp, "%.1f µs", 1e-3), r.fig(n, "B/op", "%.0f", 1),
			r.fig(n, allocsOp, "%.0f", 1), over)
	}
	t.write(b)
}

func writeProblems(b *strings.Builder, r *results) {
	if len(r.skipped) == 0 && len(r.failed) == 0 {
		return
	}
	b.WriteString("## Skipped and failed\n\n")
	for _, name := range slices.Sorted(maps.Keys(r.skipped)) {
		fmt.Fprintf(b, "- skipped: `%s`: %s\n", name, r.skipped[name])
	}
	for _, name := range slices.Sorted(maps.Keys(r.failed)) {
		fmt.Fprintf(b, "- failed in %d round(s): `%s`: %s\n", r.failedN[name], name, r.failed[name])
	}
	b.WriteString("\n")
}

// benchstat compares peers and floors with ours, scenario by scenario.
// Without benchstat it says how to get it.
func benchstat(raw string) string {
	bin, err := exec.LookPath("benchstat")
	if err != nil {
		home, _ := os.UserHomeDir()
		gopath := strings.TrimSpace(output("go", "env", "GOPATH"))
		for _, p := range []string{filepath.Join(gopath, "bin", "benchstat"), filepath.Join(home, "go", "bin", "benchstat")} {
			if _, err := os.Stat(p); err == nil {
				bin = p
				break
			}
		}
	}
	if bin == "" {
		return "benchstat not found: go install golang.org/x/perf/cmd/benchstat@latest, then run make bench again\n" +
			"(or benchstat " + raw + " by hand)."
	}
	var out strings.Builder
	for _, s := range []struct{ name, col string }{
		{"Uncontended", "/impl"}, {"Parallel", "/impl"}, {"Handoff", "/impl"}, {"Pass", "/impl"}, {"ManyKeys", "/impl"}, {"Middleware", "/stack"},
	} {
		cmd := exec.Command(bin, "-filter", ".name:"+s.name, "-col", s.col, raw)
		res, err := cmd.CombinedOutput()
		if err != nil {
			fmt.Fprintf(&out, "benchstat %s: %v\n", s.name, err)
		}
		var kept []string
		for line := range strings.SplitSeq(strings.TrimSpace(string(res)), "\n") {
			if k, _, ok := strings.Cut(line, ": "); ok && slices.Contains([]string{"goos", "goarch", "pkg", "cpu"}, k) {
				continue // the machine is described above
			}
			kept = append(kept, line)
		}
		fmt.Fprintf(&out, "# %s\n%s\n\n", s.name, strings.Join(kept, "\n"))
	}
	return out.String()
}
