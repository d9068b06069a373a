package main

import "fmt"

// goRedisTargets are issue 15's goals for ours over an application's
// go-redis client (impl=ours-goredis), judged on the medians, and its
// Redis Cluster figures, which have no target: reported only.
func goRedisTargets(r *results) []target {
	var ts []target
	u := func(impl string) string { return bname("Uncontended", "redis1", impl) }
	goal := "Issue 15, Redis 1 node, uncontended: the go-redis path within 1.10x of the redigo path"
	if v, ok := r.medians(nsOp, u("ours-goredis"), u("ours")); ok {
		ratio := v[0] / v[1]
		p := mannWhitneyP(r.values(u("ours-goredis"), nsOp), r.values(u("ours"), nsOp))
		ts = append(ts, judge(goal, true, ratio <= 1.10,
			fmt.Sprintf("go-redis %s, redigo %s: %.2fx (p=%.2f)", us(v[0]), us(v[1]), ratio, p),
			fmt.Sprintf("%.2fx", ratio)))
	} else {
		ts = append(ts, judge(goal, false, false, "", ""))
	}

	p := func(backend, impl string) string { return bname("Parallel", backend, impl) }
	goal = "Issue 15, 64 goroutines on distinct keys (Redis, 1 node): the go-redis path at least 2x redsync over go-redis"
	if v, ok := r.medians(opsSec, p("redis1", "ours-goredis"), p("redis1", "redsync-goredis")); ok {
		ratio := v[0] / v[1]
		fig := fmt.Sprintf("go-redis path %.0f ops/s, redsync over go-redis %.0f: %.2fx", v[0], v[1], ratio)
		if w, ok := r.medians(opsSec, p("redis1", "ours"), p("redis1", "redsync")); ok {
			fig += fmt.Sprintf(" (redigo path %.0f, redsync over redigo %.0f)", w[0], w[1])
		}
		ts = append(ts, judge(goal, true, ratio >= 2, fig, fmt.Sprintf("%.2fx", ratio)))
	} else {
		ts = append(ts, judge(goal, false, false, "", ""))
	}

	goal = "Issue 15, Redis Cluster: 64 goroutines on distinct keys over 3 masters, beside one node (no target: the servers share one CPU)"
	if v, ok := r.medians(opsSec, p(cluster3, "ours-goredis"), p("redis1", "ours-goredis")); ok {
		fig := fmt.Sprintf("3 masters %.0f ops/s, one node %.0f: %.2fx", v[0], v[1], v[0]/v[1])
		if c1, ok := r.median(p(cluster1, "ours-goredis"), opsSec); ok {
			fig += fmt.Sprintf("; a 1-master cluster %.0f (%.2fx)", c1, c1/v[1])
		}
		if s, ok := r.median(p(cluster3, "ours-goredis"), "busiest-master-%"); ok {
			fig += fmt.Sprintf("; the busiest master ran %.0f%% of the commands", s)
		}
		u := func(backend string) string { return bname("Uncontended", backend, "ours-goredis") }
		if w, ok := r.medians(nsOp, u(cluster3), u("redis1")); ok {
			fig += fmt.Sprintf("; uncontended %s on the cluster, %s on one node: %.2fx", us(w[0]), us(w[1]), w[0]/w[1])
		}
		ts = append(ts, target{goal: goal, figure: fig, state: "reported"})
	} else {
		ts = append(ts, judge(goal, false, false, "", ""))
	}
	return ts
}

// Backends of issue 15's benchmarks (bench/goredis_test.go).
const (
	cluster3 = "cluster3"
	cluster1 = "cluster1"
)

// parallelVs is writeParallel's comparison for issue 15's rows, ok false
// for the others: redsync over go-redis against ours over go-redis, a
// cluster against ours over go-redis on one node.
func parallelVs(r *results, name string, kv map[string]string) (string, bool) {
	ours := bname("Parallel", kv["backend"], "ours-goredis")
	switch {
	case kv["impl"] == "redsync-goredis":
		return r.ratio(ours, name, opsSec) + " (ours-goredis / impl)", true
	case kv["backend"] == cluster3 || kv["backend"] == cluster1:
		return r.ratio(name, bname("Parallel", "redis1", "ours-goredis"), opsSec) + " (of ours-goredis, 1 node)", true
	}
	return "", false
}

// What issue 15's rows are: paragraphs of the tables' introductions.
const (
	goRedisUncontendedText = "\nours-goredis is ours through an application's go-redis client\n" +
		"(`goredis.FromClient(redis.NewClient(...))`, a pool of 64, ContextTimeoutEnabled) rather than redigo (ours,\n" +
		"opened from a DSN): one code path, two transports (issue 15). On Redis Cluster it is the same over a\n" +
		"`*redis.ClusterClient` of 3 masters (no replicas) the benchmark process starts, beside ours-goredis on one\n" +
		"node: one key lives on one master, so what the row adds is the cluster's cost per operation.\n"
	goRedisParallelText = "\nours-goredis as above; redsync-goredis is redsync over a go-redis client with the same options (its\n" +
		"goredis/v9 pool), compared with ours-goredis. The Redis Cluster rows are ours-goredis over a\n" +
		"`*redis.ClusterClient` (pools of 64 per master) of a cluster the benchmark process starts (3 masters, or 1\n" +
		"master with every slot; no replicas), compared with ours-goredis on one plain node. Every server shares the\n" +
		"one server CPU, so a cluster here can show its cost per operation, not more throughput (see Analysis).\n"
)
