package main

import "fmt"

// pgxTargets is issue 15's goal for ours over an application's pgx pool
// (impl=ours-pgx, bench/pgx_test.go), judged on the medians.
func pgxTargets(r *results) []target {
	u := func(impl string) string { return bname("Uncontended", "postgres", impl) }
	goal := "Issue 15, PostgreSQL, uncontended: the pgx path within 1.10x of the lib/pq path"
	v, ok := r.medians(nsOp, u("ours-pgx"), u("ours"))
	if !ok {
		return []target{judge(goal, false, false, "", "")}
	}
	ratio := v[0] / v[1]
	p := mannWhitneyP(r.values(u("ours-pgx"), nsOp), r.values(u("ours"), nsOp))
	return []target{judge(goal, true, ratio <= 1.10,
		fmt.Sprintf("pgx %s, lib/pq %s: %.2fx (p=%.2f)", us(v[0]), us(v[1]), ratio, p),
		fmt.Sprintf("%.2fx", ratio))}
}
