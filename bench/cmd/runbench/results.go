package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// benchLine is one result line of go test -bench.
type benchLine struct {
	name    string // without the -GOMAXPROCS suffix
	text    string // the line as printed, suffix removed
	iters   int64
	units   []string
	metrics map[string]float64
}

// runResult is what one run of the test binary printed.
type runResult struct {
	output  string
	lines   []benchLine
	skipped map[string]string // benchmark -> why
	failed  map[string]string // benchmark -> its failure messages
}

func (r *runResult) names() []string {
	var names []string
	for _, l := range r.lines {
		names = append(names, l.name)
	}
	return names
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

// parseOutput reads benchmark lines, and SKIP and FAIL reports (indented
// by their depth) with the messages indented under them.
func parseOutput(out string) *runResult {
	res := &runResult{output: out, skipped: map[string]string{}, failed: map[string]string{}}
	var cur map[string]string // the report the indented lines belong to
	var curName string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "--- SKIP: "), strings.HasPrefix(trimmed, "--- FAIL: "):
			cur = res.skipped
			if strings.HasPrefix(trimmed, "--- FAIL: ") {
				cur = res.failed
			}
			curName = strings.Fields(trimmed)[2]
			cur[curName] = ""
		case cur != nil && strings.HasPrefix(line, " "):
			cur[curName] = strings.TrimSpace(cur[curName] + " " + trimmed)
		case strings.HasPrefix(line, "Benchmark"):
			cur = nil
			if l, ok := parseLine(line); ok {
				res.lines = append(res.lines, l)
			}
		default:
			cur = nil
		}
	}
	// A parent reports with its children: keep the leaves.
	for _, m := range []map[string]string{res.failed, res.skipped} {
		for name := range m {
			for other := range m {
				if strings.HasPrefix(other, name+"/") {
					delete(m, name)
					break
				}
			}
		}
	}
	return res
}

// rename gives the results of benchmark from the name to.
func (r *runResult) rename(from, to string) {
	for i, l := range r.lines {
		if l.name == from {
			r.lines[i].name, r.lines[i].text = to, to+strings.TrimPrefix(l.text, from)
		}
	}
	for _, m := range []map[string]string{r.failed, r.skipped} {
		if msg, ok := m[from]; ok {
			delete(m, from)
			m[to] = msg
		}
	}
}

// missing records a benchmark that was run and printed no result, failure
// or skip (a crash, a timeout), with the end of what the process printed.
func (r *runResult) missing(name string) {
	for _, l := range r.lines {
		if l.name == name {
			return
		}
	}
	if _, ok := r.failed[name]; ok {
		return
	}
	if _, ok := r.skipped[name]; ok {
		return
	}
	out := strings.TrimSpace(r.output)
	if len(out) > 300 {
		out = "..." + out[len(out)-300:]
	}
	r.failed[name] = "no result; the process printed: " + strings.Join(strings.Fields(out), " ")
}

func parseLine(line string) (benchLine, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 {
		return benchLine{}, false
	}
	iters, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return benchLine{}, false
	}
	l := benchLine{name: procsSuffix.ReplaceAllString(f[0], ""), iters: iters, metrics: map[string]float64{}}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return benchLine{}, false
		}
		l.units = append(l.units, f[i+1])
		l.metrics[f[i+1]] = v
	}
	l.text = l.name + strings.TrimPrefix(line, f[0])
	return l, true
}

// results gathers the rounds.
type results struct {
	order   []string // the benchmarks, in the order go test runs them
	rounds  [][]benchLine
	skipped map[string]string
	failed  map[string]string
	failedN map[string]int // rounds in which each benchmark failed
	// before are the figures of an earlier run the targets compare with
	// (results/before-queue.txt: issue 14's "before"), or nil.
	before *results
}

func (r *results) add(round int, res *runResult) {
	for len(r.rounds) < round {
		r.rounds = append(r.rounds, nil)
	}
	r.rounds[round-1] = append(r.rounds[round-1], res.lines...)
	if r.failedN == nil {
		r.failedN = map[string]int{}
	}
	for name, msg := range res.failed {
		r.failed[name] = msg
		r.failedN[name]++
	}
	for name, msg := range res.skipped {
		r.skipped[name] = msg
	}
}

// values returns a benchmark's figures in unit, one per round that has it.
func (r *results) values(name, unit string) []float64 {
	var vs []float64
	for _, round := range r.rounds {
		for _, l := range round {
			if v, ok := l.metrics[unit]; ok && l.name == name {
				vs = append(vs, v)
			}
		}
	}
	return vs
}

// median returns the median of a benchmark's figures in unit.
func (r *results) median(name, unit string) (float64, bool) {
	vs := r.values(name, unit)
	if len(vs) == 0 {
		return 0, false
	}
	return median(vs), true
}

// median returns the median of vs (not empty), which it sorts.
func median(vs []float64) float64 {
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

// writeRaw writes every round in benchstat's format, each round's lines
// in the canonical order, so that benchstat's columns come out in it too.
func (r *results) writeRaw(path string, m machine) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "goos: linux\ngoarch: %s\npkg: github.com/mutexkit/mutexkit/bench\ncpu: %s\n", m.goarch, m.cpu)
	for _, round := range r.rounds {
		for _, name := range r.order {
			for _, l := range round {
				if l.name == name {
					b.WriteString(l.text + "\n")
				}
			}
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
