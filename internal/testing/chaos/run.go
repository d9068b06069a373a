package chaos

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// Scenario is one fault-injection run: workers contend for keys while
// Fault injects faults, for a bounded time and a bounded number of
// operations.
type Scenario struct {
	Name    string
	Backend string // e.g. "Redlock, 5 nodes"
	// Promise is what the driver promises under this fault, for the report.
	Promise string
	// Safe: the driver promises no overlap under this fault; the run fails
	// if the checker finds one.
	Safe  bool
	Model LossModel
	// Workers are started as processes; ID, For and Store are set by Run.
	Workers []WorkerConfig
	// Fault injects faults until ctx ends, recording each with r.Inject
	// and r.Heal. It may drive the Controlled worker through r.
	Fault func(ctx context.Context, r *Run) error
}

// FaultRecord is one injected fault.
type FaultRecord struct {
	Kind   string
	At     int64 // injected (Now)
	Healed int64 // 0 until healed; equal to At for instant faults
}

// Run is a scenario in progress.
type Run struct {
	t        testing.TB
	workers  []*Worker
	ctrl     *Worker
	held     chan event
	sections chan Section // copies of sections, for Fault to watch

	mu        sync.Mutex
	faults    []FaultRecord
	all       []Section
	failed    int
	errSample []string
	killed    map[int]bool // workers killed by the fault: their exit is no error
}

// Inject records a fault injected now and returns its index for Heal.
func (r *Run) Inject(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, FaultRecord{Kind: kind, At: Now()})
	return len(r.faults) - 1
}

// Heal records that fault i ended now.
func (r *Run) Heal(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults[i].Healed = Now()
}

// KillWorker kills worker i (SIGKILL) and waits for it to exit.
func (r *Run) KillWorker(i int) {
	r.mu.Lock()
	r.killed[i] = true
	r.mu.Unlock()
	r.workers[i].Kill()
}

// Controlled returns the controlled worker, if the scenario has one.
func (r *Run) Controlled() *Worker { return r.ctrl }

// Held waits for the controlled worker to report a held lease.
func (r *Run) Held(ctx context.Context) (client, key string, token uint64, ok bool) {
	select {
	case ev, open := <-r.held:
		return ev.Client, ev.Key, ev.Token, open
	case <-ctx.Done():
		return "", "", 0, false
	}
}

// WaitSection waits until some client other than client reports a section
// of key that began after since, or ctx ends.
func (r *Run) WaitSection(ctx context.Context, client, key string, since int64) bool {
	for {
		select {
		case s := <-r.sections:
			if s.Key == key && s.Client != client && s.Start > since {
				return true
			}
		case <-ctx.Done():
			return false
		}
	}
}

// Figures are a scenario's results.
type Figures struct {
	Scenario, Backend, Promise string
	Safe                       bool
	Smoke                      bool // also in the short run of make test
	Duration                   time.Duration
	Workers, Clients           int
	Sections, FailedLocks      int
	Faults                     int
	Check                      Result
	Accepted, StaleRejected    int
	// Lost leases and how long after the latest fault before each the
	// client saw the loss.
	LossN                     int
	LossMedian, LossMax       time.Duration
	Recovered                 int
	RecoverMedian, RecoverMax time.Duration
	// How long Lock calls waited (Call to Start of each section), and the
	// longest wait in handoffs passed over (passedOver).
	WaitMedian, WaitMax time.Duration
	PassedMax           int
	ErrSample           []string
}

// Execute runs sc for d and returns its figures. Workers stop starting
// sections after d; each is bounded by its Ops too.
func Execute(t testing.TB, sc Scenario, d time.Duration) Figures {
	t.Helper()
	store, err := NewStore()
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r := &Run{t: t, held: make(chan event, 16), sections: make(chan Section, 1<<14), killed: map[int]bool{}}
	clients := 0
	for i, cfg := range sc.Workers {
		cfg.ID, cfg.For, cfg.Store = i, d, store.Addr()
		w, err := Spawn(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Kill()
		r.workers = append(r.workers, w)
		if cfg.Controlled {
			r.ctrl = w
		}
		clients += cfg.Clients
	}
	// Ready, then start together.
	for _, w := range r.workers {
		select {
		case ev, ok := <-w.Events:
			if !ok || ev.Kind != "ready" {
				t.Fatalf("worker %d did not start: %v", w.Cfg.ID, w.Wait())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("worker %d not ready after 60s", w.Cfg.ID)
		}
	}
	var collect sync.WaitGroup
	for _, w := range r.workers {
		collect.Go(func() { r.collect(w) })
	}
	begin := time.Now()
	for _, w := range r.workers {
		w.Send("go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	faultErr := make(chan error, 1)
	go func() { faultErr <- sc.Fault(ctx, r) }()
	<-ctx.Done()
	cancel()
	if err := <-faultErr; err != nil {
		t.Errorf("%s: injecting faults: %v", sc.Name, err)
	}
	// Let the controlled worker finish its sections.
	stopDrain := make(chan struct{})
	if r.ctrl != nil {
		go func() {
			for {
				select {
				case <-r.held:
					r.ctrl.Send("go")
				case <-stopDrain:
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { collect.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Errorf("%s: workers still running 90s after the scenario ended; killing them", sc.Name)
		for _, w := range r.workers {
			w.Kill()
		}
		<-done
	}
	close(stopDrain)
	elapsed := time.Since(begin)
	for i, w := range r.workers {
		r.mu.Lock()
		killed := r.killed[i]
		r.mu.Unlock()
		if err := w.Wait(); err != nil && !killed {
			t.Errorf("%s: %v", sc.Name, err)
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	f := Figures{
		Scenario: sc.Name, Backend: sc.Backend, Promise: sc.Promise, Safe: sc.Safe, Duration: elapsed,
		Workers: len(r.workers), Clients: clients, Sections: len(r.all), FailedLocks: r.failed,
		Faults: len(r.faults), ErrSample: r.errSample,
	}
	f.Check = Check(r.all, sc.Model, 60*time.Second)
	f.Accepted, f.StaleRejected = store.Counts()
	var loss, rec []time.Duration
	for _, s := range r.all {
		if s.LostAt == 0 {
			continue
		}
		var latest int64
		for _, fr := range r.faults {
			if fr.At <= s.LostAt && fr.At > latest {
				latest = fr.At
			}
		}
		if latest != 0 {
			loss = append(loss, time.Duration(s.LostAt-latest))
		}
	}
	for _, fr := range r.faults {
		if fr.Healed == 0 {
			continue
		}
		first := int64(0)
		for _, s := range r.all {
			if s.Start > fr.Healed && (first == 0 || s.Start < first) {
				first = s.Start
			}
		}
		if first != 0 {
			rec = append(rec, time.Duration(first-fr.Healed))
		}
	}
	f.LossN = f.Check.Lost
	f.LossMedian, f.LossMax = medianMax(loss)
	f.Recovered = len(rec)
	f.RecoverMedian, f.RecoverMax = medianMax(rec)
	f.WaitMedian, f.WaitMax = lockWaits(r.all)
	f.PassedMax = passedOver(r.all, clients)
	return f
}

func (r *Run) collect(w *Worker) {
	for ev := range w.Events {
		switch ev.Kind {
		case "sec":
			r.mu.Lock()
			r.all = append(r.all, *ev.Section)
			r.mu.Unlock()
			select {
			case r.sections <- *ev.Section:
			default: // nobody watching
			}
		case "err":
			r.mu.Lock()
			r.failed++
			if len(r.errSample) < 5 {
				r.errSample = append(r.errSample, ev.Msg)
			}
			r.mu.Unlock()
		case "held":
			r.held <- ev
		}
	}
}

func medianMax(ds []time.Duration) (time.Duration, time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)-1]
}

// Summary is a one-line account of the figures.
func (f Figures) Summary() string {
	return fmt.Sprintf("%s: %d sections (%d failed locks) by %d clients in %d processes in %v, %d faults; %s; store: %d writes accepted, %d stale refused; loss seen median %v max %v after the fault; recovery median %v max %v; Lock wait median %v max %v, passed over at most %d",
		f.Scenario, f.Sections, f.FailedLocks, f.Clients, f.Workers, f.Duration.Round(time.Millisecond), f.Faults, f.Check,
		f.Accepted, f.StaleRejected, f.LossMedian.Round(time.Millisecond), f.LossMax.Round(time.Millisecond),
		f.RecoverMedian.Round(time.Millisecond), f.RecoverMax.Round(time.Millisecond),
		f.WaitMedian.Round(time.Millisecond), f.WaitMax.Round(time.Millisecond), f.PassedMax)
}

// At returns when fault i was injected.
func (r *Run) At(i int) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.faults[i].At
}

// HeadWaiter returns the worker whose client is most likely at the head
// of the queue of key: in arrival order the holder is the client whose
// last section of key ended longest ago, and the head the next one. Only
// live, uncontrolled workers with a section of key count; ok is false
// when fewer than two clients have one.
func (r *Run) HeadWaiter(key string) (worker int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	last := map[string]int64{} // client -> its last section's end
	owner := map[string]int{}  // client -> worker
	for _, s := range r.all {
		var w, c int
		if _, err := fmt.Sscanf(s.Client, "w%dc%d", &w, &c); err != nil || s.Key != key || r.killed[w] || r.workers[w].Cfg.Controlled {
			continue
		}
		last[s.Client] = max(last[s.Client], s.UnlockRet)
		owner[s.Client] = w
	}
	clients := slices.SortedFunc(maps.Keys(last), func(a, b string) int { return cmp.Compare(last[a], last[b]) })
	if len(clients) < 2 {
		return 0, false
	}
	return owner[clients[1]], true
}
