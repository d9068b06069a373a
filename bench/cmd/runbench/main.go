// Command runbench runs the benchmarks of the bench module as interleaved
// rounds and writes docs/BENCHMARKS.md from their medians. make bench runs
// it from the bench directory:
//
//	go run ./cmd/runbench -rounds 6 -out ../docs/BENCHMARKS.md
//
// It builds the test binary once, runs every benchmark once (one
// iteration, to learn their names and warm up), then, for each round,
// runs every benchmark once in a shuffled order, each in a process of its
// own with fresh redis-server processes. Where it can (taskset, two CPUs
// or more) it pins the benchmark process to one CPU and the servers to
// the others. Raw results go to results/raw.txt in benchstat's format,
// and everything the runs printed to results/output.txt (not committed).
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

func main() {
	var cfg config
	flag.IntVar(&cfg.rounds, "rounds", 6, "interleaved rounds: every benchmark once per round (benchstat needs 6 for confidence intervals)")
	flag.StringVar(&cfg.out, "out", "../docs/BENCHMARKS.md", "the page to write")
	flag.StringVar(&cfg.raw, "raw", "results/raw.txt", "where to keep the raw results (benchstat's format)")
	flag.StringVar(&cfg.filter, "bench", ".", "run only benchmarks matching this regexp (go test -bench syntax)")
	flag.StringVar(&cfg.before, "before", "results/before-queue.txt", `figures from before a change (benchstat's format) that targets compare with; "" for none`)
	flag.StringVar(&cfg.beforeRev, "before-rev", "ecb0050", `a revision of this repository (git) whose uncontended benchmarks of ours run beside today's in every round, as impl=ours-before (issue 14's "no slower than before": ecb0050 is the code before the wait queues); "" for none`)
	flag.BoolVar(&cfg.render, "render", false, "run nothing: write the page again from the last run's results (after editing notes.md)")
	flag.StringVar(&cfg.clientCPUs, "client-cpus", "auto", `CPUs of the benchmark process (taskset -c list), "" for no pinning; auto: 0`)
	flag.StringVar(&cfg.serverCPUs, "server-cpus", "auto", `CPUs of the servers, "" for no pinning; auto: the others`)
	flag.Parse()
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "runbench:", err)
		os.Exit(1)
	}
}

type config struct {
	rounds                 int
	render                 bool
	out, raw, filter       string
	before, beforeRev      string
	clientCPUs, serverCPUs string
}

// Handoffs per round: a fixed number, so that 128 waiters and redsync's
// 50-250 ms polling take a sane time and every run has the samples of a
// 99th percentile.
const (
	handoffsPerRound        = 2000
	handoffsPerRoundPolling = 300 // redsync's defaults: about 45 handoffs/s at 8 waiters
)

// isHandoff reports whether name is a handoff benchmark: a fixed number
// of grants per round.
func isHandoff(name string) bool {
	return strings.HasPrefix(name, "BenchmarkHandoff/") || strings.HasPrefix(name, "BenchmarkPass/")
}

// benchtime is how long each benchmark runs per round: handoffs a fixed
// number of them; many keys is one measurement per run.
func benchtime(name string) string {
	switch {
	case strings.HasPrefix(name, "BenchmarkManyKeys/"):
		return "1x"
	case isHandoff(name) && strings.HasSuffix(name, "/impl=redsync-default"):
		return fmt.Sprintf("%dx", handoffsPerRoundPolling)
	case isHandoff(name):
		return fmt.Sprintf("%dx", handoffsPerRound)
	}
	return "1s"
}

func run(cfg config) error {
	if cfg.render {
		return render(cfg)
	}
	if cfg.rounds < 1 {
		return fmt.Errorf("-rounds %d: want at least 1", cfg.rounds)
	}
	pinCPUs(&cfg)
	if err := os.MkdirAll(filepath.Dir(cfg.raw), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "runbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "bench.test")
	logf("building the benchmarks")
	if out, err := exec.Command("go", "test", "-mod=mod", "-c", "-o", bin, ".").CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c: %v\n%s", err, out)
	}
	var beforeBin string
	if cfg.beforeRev != "" {
		logf("building the benchmarks at %s", cfg.beforeRev)
		if beforeBin, err = buildAt(cfg.beforeRev, tmp); err != nil {
			// A clone without that revision (a shallow one) still
			// benchmarks today's code; the target says it was not measured.
			logf("without ours-before: %v", err)
			beforeBin = ""
		}
	}
	started := time.Now()
	mach := describeMachine(cfg)

	// Not -short: that runs the smallest of an axis only (the handoff's
	// waiters).
	logf("discovery: every benchmark once, one iteration")
	first, err := runBench(cfg, bin, cfg.filter, "1x")
	if err != nil {
		return err
	}
	names := first.names()
	if len(names) == 0 {
		return fmt.Errorf("no benchmark ran:\n%s", first.output)
	}
	if beforeBin != "" {
		names = withBefore(names)
	}
	all := &results{order: names, skipped: first.skipped, failed: first.failed, before: loadBefore(cfg.before)}
	// Everything each run printed, for a failure the page only summarises.
	outputs, err := os.Create(filepath.Join(filepath.Dir(cfg.raw), "output.txt"))
	if err != nil {
		return err
	}
	defer outputs.Close()
	for r := 1; r <= cfg.rounds; r++ {
		order := append([]string(nil), names...)
		rng := rand.New(rand.NewPCG(uint64(r), 8))
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for i, name := range order {
			logf("round %d/%d, %d/%d: %s", r, cfg.rounds, i+1, len(order), name)
			mach.loads = append(mach.loads, load1())
			var res *runResult
			if today, ok := strings.CutSuffix(name, "/impl=ours-before"); ok {
				res, err = runBench(cfg, beforeBin, exactPattern(today+"/impl=ours"), benchtime(name))
				if err == nil {
					res.rename(today+"/impl=ours", name)
				}
			} else {
				res, err = runBench(cfg, bin, exactPattern(name), benchtime(name))
			}
			if err != nil {
				return err
			}
			res.missing(name)
			fmt.Fprintf(outputs, "=== round %d: %s\n%s\n", r, name, res.output)
			all.add(r, res)
		}
	}
	mach.loadAfter = loadAvg()
	mach.elapsed = time.Since(started)

	if err := all.writeRaw(cfg.raw, mach); err != nil {
		return err
	}
	if err := saveRun(cfg, mach, all); err != nil {
		return err
	}
	stat := benchstat(cfg.raw)
	page := report(cfg, mach, all, stat)
	if err := os.WriteFile(cfg.out, []byte(page), 0o644); err != nil {
		return err
	}
	logf("wrote %s and %s in %v", cfg.out, cfg.raw, time.Since(started).Round(time.Second))
	return nil
}

// withBefore returns names with, after the uncontended benchmark of ours
// on each of beforeBackends, its twin from the -before-rev build.
func withBefore(names []string) []string {
	var out []string
	for _, n := range names {
		out = append(out, n)
		for _, backend := range beforeBackends {
			if n == bname("Uncontended", backend, "ours") {
				out = append(out, bname("Uncontended", backend, "ours-before"))
			}
		}
	}
	return out
}

// buildAt builds the benchmarks of this repository as they were at rev
// (git archive, in a directory under tmp) and returns the test binary.
func buildAt(rev, tmp string) (string, error) {
	dir := filepath.Join(tmp, "at-"+rev)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	archive := exec.Command("git", "-C", "..", "archive", "--format=tar", rev)
	extract := exec.Command("tar", "-x", "-C", dir)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return "", err
	}
	extract.Stdin = pipe
	var stderr strings.Builder
	archive.Stderr, extract.Stderr = &stderr, &stderr
	if err := extract.Start(); err != nil {
		return "", err
	}
	if err := archive.Run(); err != nil {
		extract.Wait()
		return "", fmt.Errorf("git archive %s: %v\n%s", rev, err, stderr.String())
	}
	if err := extract.Wait(); err != nil {
		return "", fmt.Errorf("tar: %v\n%s", err, stderr.String())
	}
	bin := filepath.Join(tmp, "bench-"+rev+".test")
	build := exec.Command("go", "test", "-mod=mod", "-c", "-o", bin, ".")
	build.Dir = filepath.Join(dir, "bench")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go test -c at %s: %v\n%s", rev, err, out)
	}
	return bin, nil
}

// pinCPUs resolves "auto": the benchmark process on CPU 0, the servers on
// the rest, when taskset exists and there are two CPUs or more.
func pinCPUs(cfg *config) {
	_, err := exec.LookPath("taskset")
	can := err == nil && runtime.NumCPU() >= 2
	if cfg.clientCPUs == "auto" {
		cfg.clientCPUs = ""
		if can {
			cfg.clientCPUs = "0"
		}
	}
	if cfg.serverCPUs == "auto" {
		cfg.serverCPUs = ""
		if can {
			cfg.serverCPUs = fmt.Sprintf("1-%d", runtime.NumCPU()-1)
			if runtime.NumCPU() == 2 {
				cfg.serverCPUs = "1"
			}
		}
	}
}

// runBench runs the test binary once for the benchmarks pattern matches.
func runBench(cfg config, bin, pattern, benchtime string) (*runResult, error) {
	args := []string{bin, "-test.run", "^$", "-test.bench", pattern, "-test.benchtime", benchtime,
		"-test.benchmem", "-test.count", "1", "-test.timeout", "10m"}
	if cfg.clientCPUs != "" {
		args = append([]string{"taskset", "-c", cfg.clientCPUs}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 11*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "MUTEXKIT_BENCH_SERVER_CPUS="+cfg.serverCPUs)
	out, err := cmd.CombinedOutput()
	res := parseOutput(string(out))
	if err != nil && len(res.failed) == 0 {
		return nil, fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return res, nil
}

// exactPattern is a -test.bench pattern matching name and nothing else.
func exactPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexpQuote(p) + "$"
	}
	return strings.Join(parts, "/")
}

func regexpQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "runbench: "+format+"\n", args...)
}
