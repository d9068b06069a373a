package main

import (
	"strings"
	"testing"
)

const sampleOutput = `goos: linux
goarch: amd64
pkg: github.com/mutexkit/mutexkit/bench
cpu: AMD EPYC
BenchmarkUncontended/backend=redis1/impl=ours-2         	    2970	    388813 ns/op	    1055 B/op	      20 allocs/op
BenchmarkHandoff/backend=redis1/impl=redsync-1to5ms     	    1018	   2298929 ns/op	        10.42 RT/handoff	       435.0 handoffs/s
--- FAIL: BenchmarkUncontended
    --- FAIL: BenchmarkUncontended/backend=redis5
        --- FAIL: BenchmarkUncontended/backend=redis5/impl=ours
            uncontended_test.go:47: mutex: trylock: redlock: acquire:
                dial tcp: i/o timeout
--- SKIP: BenchmarkUncontended/backend=postgres/impl=floor
    servers_test.go:45: PostgreSQL is unavailable
FAIL
`

func TestParseOutput(t *testing.T) {
	res := parseOutput(sampleOutput)
	if got := strings.Join(res.names(), " "); got != "BenchmarkUncontended/backend=redis1/impl=ours BenchmarkHandoff/backend=redis1/impl=redsync-1to5ms" {
		t.Errorf("names: %s", got)
	}
	l := res.lines[0]
	if l.iters != 2970 || l.metrics["ns/op"] != 388813 || l.metrics["allocs/op"] != 20 {
		t.Errorf("first line: %+v", l)
	}
	if l.text != "BenchmarkUncontended/backend=redis1/impl=ours"+strings.TrimPrefix(strings.Split(sampleOutput, "\n")[4], "BenchmarkUncontended/backend=redis1/impl=ours-2") {
		t.Errorf("text keeps the suffix: %q", l.text)
	}
	if res.lines[1].metrics["RT/handoff"] != 10.42 {
		t.Errorf("custom metric: %+v", res.lines[1].metrics)
	}
	if len(res.failed) != 1 || !strings.Contains(res.failed["BenchmarkUncontended/backend=redis5/impl=ours"], "i/o timeout") {
		t.Errorf("failed: %q", res.failed)
	}
	if len(res.skipped) != 1 || !strings.Contains(res.skipped["BenchmarkUncontended/backend=postgres/impl=floor"], "unavailable") {
		t.Errorf("skipped: %q", res.skipped)
	}
	res.missing("BenchmarkParallel/backend=redis1/impl=ours")
	if !strings.HasPrefix(res.failed["BenchmarkParallel/backend=redis1/impl=ours"], "no result") {
		t.Errorf("missing: %q", res.failed)
	}
}

func TestExactPattern(t *testing.T) {
	if got := exactPattern("BenchmarkManyKeys/backend=redis1/keys=1000/impl=ours"); got != "^BenchmarkManyKeys$/^backend=redis1$/^keys=1000$/^impl=ours$" {
		t.Errorf("exactPattern: %s", got)
	}
}

func TestRenameBefore(t *testing.T) {
	res := parseOutput(sampleOutput)
	res.rename("BenchmarkUncontended/backend=redis1/impl=ours", "BenchmarkUncontended/backend=redis1/impl=ours-before")
	res.rename("BenchmarkUncontended/backend=redis5/impl=ours", "BenchmarkUncontended/backend=redis5/impl=ours-before")
	if l := res.lines[0]; l.name != "BenchmarkUncontended/backend=redis1/impl=ours-before" ||
		!strings.HasPrefix(l.text, l.name+" ") || l.metrics["ns/op"] != 388813 {
		t.Errorf("renamed line: %+v", l)
	}
	if _, ok := res.failed["BenchmarkUncontended/backend=redis5/impl=ours-before"]; !ok || len(res.failed) != 1 {
		t.Errorf("renamed failure: %q", res.failed)
	}
	names := withBefore([]string{"BenchmarkUncontended/backend=redis1/impl=ours", "BenchmarkUncontended/backend=mysql/impl=ours",
		"BenchmarkHandoff/backend=redis1/waiters=8/impl=ours"})
	want := "BenchmarkUncontended/backend=redis1/impl=ours BenchmarkUncontended/backend=redis1/impl=ours-before " +
		"BenchmarkUncontended/backend=mysql/impl=ours BenchmarkHandoff/backend=redis1/waiters=8/impl=ours"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("withBefore:\n got %s\nwant %s", got, want)
	}
}
