package chaos

import (
	"context"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// The scenario machinery shared by the suites: the core's TestChaos and
// the suites of drivers in modules of their own (driver/mysql), which
// import this package and run their scenarios with RunCases. Every suite
// reads the same switch: CHAOS_DURATION set is the full run (make chaos).

// Full reports whether this is the full run (make chaos): CHAOS_DURATION
// set. Otherwise a short run of a few scenarios goes with make test.
func Full() bool { return os.Getenv("CHAOS_DURATION") != "" }

// Duration is each scenario's length: CHAOS_DURATION, or 3 s in the short run.
func Duration(t testing.TB) time.Duration {
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CHAOS_DURATION: %v", err)
		}
		return d
	}
	return 3 * time.Second
}

// MaxOps bounds each client's sections.
func MaxOps() int {
	if Full() {
		return 1_000_000
	}
	return 300
}

// Keys are the keys the workers contend for.
var Keys = []string{"k0", "k1", "k2"}

// Workers returns n workers of clients clients each on dsn, holding each
// section 5 ms.
func Workers(n, clients int, dsn string, ttl time.Duration, fencing bool) []WorkerConfig {
	var ws []WorkerConfig
	for range n {
		ws = append(ws, WorkerConfig{DSN: dsn, Keys: Keys, Clients: clients, TTL: ttl,
			Hold: 5 * time.Millisecond, Ops: MaxOps(), Fencing: fencing})
	}
	return ws
}

// ControlledWorker returns a worker of one client on the first key that
// the scenario's Fault drives (see WorkerConfig.Controlled).
func ControlledWorker(dsn string, ttl time.Duration, fencing bool) WorkerConfig {
	return WorkerConfig{DSN: dsn, Keys: Keys[:1], Clients: 1, TTL: ttl, Ops: 1000, Fencing: fencing, Controlled: true}
}

// Prefix returns a key prefix (or namespace) new to this run.
func Prefix() string { return "chaos" + driver.NewOwner().String()[:10] }

// Sleep waits d or until ctx ends, and reports whether ctx is still live.
func Sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// Pick returns k distinct random indexes below n.
func Pick(n, k int) []int { return rand.Perm(n)[:k] }

// PauseHolder is a Fault: it pauses the controlled holder with SIGSTOP
// until another client has held its key, then resumes it and lets it write.
func PauseHolder(ctx context.Context, r *Run) error {
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

// Case is one scenario of a suite, as RunCases runs it.
type Case struct {
	Name  string
	Short bool // also in the short run of make test
	Build func(t *testing.T) Scenario
	Check func(t *testing.T, f Figures)
}

// RunCases runs each case as a subtest of t for Duration, the short ones
// only unless Full, and returns the figures of those that ran. With
// CHAOS_FIGURES set it also appends them to that file (see ReadFigures),
// so that one report covers the suites of several modules.
func RunCases(t *testing.T, cases []Case) []Figures {
	d := Duration(t)
	var figs []Figures
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			if !Full() && !c.Short {
				t.Skip("full run only (make chaos, or set CHAOS_DURATION)")
			}
			s := c.Build(t)
			s.Name = c.Name
			f := Execute(t, s, d)
			f.Smoke = c.Short
			t.Log(f.Summary())
			c.Check(t, f)
			figs = append(figs, f)
		})
	}
	if path := os.Getenv(figuresEnv); path != "" {
		if err := appendFigures(path, figs); err != nil {
			t.Fatal(err)
		}
	}
	return figs
}

// Safe checks a scenario whose driver promises no overlap: none, no token
// regression, a linearizable history, and some section completed.
func Safe(t *testing.T, f Figures) {
	if len(f.Check.Overlaps) > 0 || len(f.Check.Regressions) > 0 || f.Check.Linearizable == "illegal" {
		t.Errorf("the driver promises safety under this fault, but: %s", f.Check)
	}
	if f.Sections == 0 {
		t.Errorf("no section completed: %v", f.ErrSample)
	}
}

// Fenced checks a scenario whose sections may overlap after the fact:
// tokens strictly increase, and of two overlapping holders the older
// one's write sent after the newer one's first write was answered was
// refused.
func Fenced(t *testing.T, f Figures) {
	if len(f.Check.Regressions) > 0 {
		t.Errorf("tokens failed to increase: %s", f.Check)
	}
	// (The older holder's writes that all landed earlier did no harm: the
	// store saw tokens in order.)
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
