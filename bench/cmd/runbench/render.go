package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// savedRun is what a page needs besides the raw results, kept beside them
// (results/run.json) so that -render can write the page again.
type savedRun struct {
	Rounds     int
	Order      []string
	Skipped    map[string]string
	Failed     map[string]string
	FailedN    map[string]int
	CPU        string
	Kernel     string
	GoVersion  string
	GoArch     string
	NProc      int
	Redis      string
	Postgres   string
	MySQL      string
	Commit     string
	Dirty      string
	ClientCPUs string
	ServerCPUs string
	LoadBefore string
	LoadAfter  string
	Loads      []float64
	Started    time.Time
	Elapsed    time.Duration
}

func runPath(cfg config) string { return filepath.Join(filepath.Dir(cfg.raw), "run.json") }

func saveRun(cfg config, m machine, r *results) error {
	data, err := json.MarshalIndent(savedRun{
		Rounds: cfg.rounds, Order: r.order, Skipped: r.skipped, Failed: r.failed, FailedN: r.failedN,
		CPU: m.cpu, Kernel: m.kernel, GoVersion: m.goVersion, GoArch: m.goarch, NProc: m.nproc,
		Redis: m.redis, Postgres: m.postgres, MySQL: m.mysql, Commit: m.commit, Dirty: m.dirty,
		ClientCPUs: m.clientCPUs, ServerCPUs: m.serverCPUs,
		LoadBefore: m.loadBefore, LoadAfter: m.loadAfter, Loads: m.loads, Started: m.started, Elapsed: m.elapsed,
	}, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(runPath(cfg), append(data, '\n'), 0o644)
}

// render writes the page from results/raw.txt and results/run.json.
func render(cfg config) error {
	data, err := os.ReadFile(runPath(cfg))
	if err != nil {
		return fmt.Errorf("no saved run to render (make bench first): %w", err)
	}
	var s savedRun
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("%s: %w", runPath(cfg), err)
	}
	lines, err := readRaw(cfg.raw)
	if err != nil {
		return err
	}
	r := &results{order: s.Order, rounds: [][]benchLine{lines}, skipped: s.Skipped, failed: s.Failed, failedN: s.FailedN,
		before: loadBefore(cfg.before)}
	m := machine{
		cpu: s.CPU, kernel: s.Kernel, goVersion: s.GoVersion, goarch: s.GoArch, nproc: s.NProc,
		redis: s.Redis, postgres: s.Postgres, mysql: s.MySQL, commit: s.Commit, dirty: s.Dirty,
		clientCPUs: s.ClientCPUs, serverCPUs: s.ServerCPUs,
		loadBefore: s.LoadBefore, loadAfter: s.LoadAfter, loads: s.Loads, started: s.Started, elapsed: s.Elapsed,
	}
	cfg.rounds = s.Rounds
	page := report(cfg, m, r, benchstat(cfg.raw))
	return os.WriteFile(cfg.out, []byte(page), 0o644)
}

// readRaw reads the benchmark lines of a raw results file.
func readRaw(path string) ([]benchLine, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var lines []benchLine
	for line := range strings.SplitSeq(string(raw), "\n") {
		if l, ok := parseLine(line); ok {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// loadBefore reads the figures a change is compared with (-before), or
// returns nil when there are none.
func loadBefore(path string) *results {
	if path == "" {
		return nil
	}
	lines, err := readRaw(path)
	if err != nil || len(lines) == 0 {
		logf("no figures from before (%s): %v", path, err)
		return nil
	}
	return &results{rounds: [][]benchLine{lines}}
}
