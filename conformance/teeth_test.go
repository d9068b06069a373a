package conformance_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
)

// The suite must have teeth: run on a deliberately broken driver, it must
// fail, in the case that guards against that fault. Each broken driver runs
// in a child process (the suite takes a real *testing.T), and the child's
// verdict is read from its output.

const brokenEnv = "MUTEXKIT_CONFORMANCE_BROKEN_DRIVER"

// brokenDrivers maps each fault to the cases that must catch it.
var brokenDrivers = map[string][]string{
	"grantsEveryAcquire": {"Exclusion", "TryLockHeld", "StaleUnlock", "Queue/Contention"},
	"unlockFreesAny":     {"Driver/ReleaseNeedsOwner"},
	"neverReportsLoss":   {"LossReported", "Driver/RenewNeedsOwner", "Driver/RenewFindsLoss"},
	"closeKeepsKeys":     {"Driver/CloseReleases"},
	"secondCloseFails":   {"Driver/AfterClose"},
	"pingsAfterClose":    {"Driver/AfterClose"},
	"watchNeverWakes":    {"Driver/Watch"},
	"watchIgnoresStop":   {"Driver/Watch"},
	// The same, on a driver that declares no wait queue.
	"unqueuedWatchNeverWakes":  {"Driver/Watch"},
	"unqueuedWatchIgnoresStop": {"Driver/Watch"},
	// Wait queues.
	"requeuesEachAttempt":       {"Queue/FIFO"},
	"leavingKeepsPlace":         {"Queue/CancelMidQueue"},
	"headLeavingKeepsKey":       {"Queue/CancelMidQueue"},
	"closeKeepsPlaces":          {"Queue/CancelMidQueue"},
	"deadHeadKept":              {"Queue/HeadKilled"},
	"neverRefreshesPlace":       {"Queue/HeadKilled"},
	"wakesEveryWaiter":          {"Queue/OneWake"},
	"restartGrantsWaiters":      {"Queue/RestartEmpty"},
	"restartStrandsWaiters":     {"Queue/RestartEmpty"},
	"restartUnlockSaysReleased": {"Queue/RestartEmpty"},
	"restartUnlockFreesWaiter":  {"Queue/RestartEmpty"},
	"starvesOneClient":          {"Queue/Contention"},
	// Not a driver's fault but its harness's: the run fails before any
	// case, naming the unknown names and the real ones.
	"unknownLacks": nil,
}

// mustSay maps a fault to what the failing run's output must say.
var mustSay = map[string][]string{
	"headLeavingKeepsKey":       {"after waiter 1 gave up (Release) while the key was kept for it"},
	"closeKeepsPlaces":          {"after waiter 1's Locker closed while the key was kept for it"},
	"neverRefreshesPlace":       {"waiter 3 served before waiter 2"},
	"restartUnlockSaysReleased": {"want an error matching mutex.ErrLockLost"},
	"restartUnlockFreesWaiter":  {"first waiter served, its Unlock after the lost holder's"},
	"unknownLacks": {
		`Capabilities.Lacks names no case: ["LossRepoted" "Vanish"]`,
		"the cases are Exclusion, TryLockHeld,",
		"--- FAIL: TestBrokenDriver ",
	},
}

// onlyCases narrows the child's run to the cases a fault is felt in,
// where the rest of the suite would only cost time.
var onlyCases = map[string]string{
	"grantsEveryAcquire": "^(Exclusion|TryLockHeld|StaleUnlock|Queue)$/^Contention$",
	"unlockFreesAny":     "^Driver$/^ReleaseNeedsOwner$",
	"neverReportsLoss":   "^(LossReported|Driver)$/^(RenewNeedsOwner|RenewFindsLoss)$",
	"closeKeepsKeys":     "^Driver$/^CloseReleases$",
	"secondCloseFails":   "^Driver$/^AfterClose$",
	"pingsAfterClose":    "^Driver$/^AfterClose$",
	"watchNeverWakes":    "^Driver$/^Watch$",
	"watchIgnoresStop":   "^Driver$/^Watch$",

	"unqueuedWatchNeverWakes":  "^Driver$/^Watch$",
	"unqueuedWatchIgnoresStop": "^Driver$/^Watch$",

	"requeuesEachAttempt":       "^Queue$/^FIFO$",
	"leavingKeepsPlace":         "^Queue$/^CancelMidQueue$",
	"headLeavingKeepsKey":       "^Queue$/^CancelMidQueue$",
	"closeKeepsPlaces":          "^Queue$/^CancelMidQueue$",
	"deadHeadKept":              "^Queue$/^HeadKilled$",
	"neverRefreshesPlace":       "^Queue$/^HeadKilled$",
	"wakesEveryWaiter":          "^Queue$/^OneWake$",
	"restartGrantsWaiters":      "^Queue$/^RestartEmpty$",
	"restartStrandsWaiters":     "^Queue$/^RestartEmpty$",
	"restartUnlockSaysReleased": "^Queue$/^RestartEmpty$",
	"restartUnlockFreesWaiter":  "^Queue$/^RestartEmpty$",
	"starvesOneClient":          "^Queue$/^Contention$",

	"wakesUntilStop": "^Driver$/^Watch$",
}

// legalDrivers are drivers that do what the contract allows, however
// oddly: the cases named must pass them.
var legalDrivers = map[string][]string{
	// Spurious wake-ups, as fast as it can, until stop returns (a
	// subscription's re-confirmation, at worst).
	"wakesUntilStop": {"Driver/Watch"},
}

// runBroken runs the suite on the driver with fault in a child process.
func runBroken(t *testing.T, fault string) ([]byte, error) {
	run := "^TestBrokenDriver$"
	if only := onlyCases[fault]; only != "" {
		run += "/" + only
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+run, "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), brokenEnv+"="+fault)
	return cmd.CombinedOutput()
}

func TestSuitePassesLegalDrivers(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("running as a child of this test")
	}
	for odd, mustPass := range legalDrivers {
		t.Run(odd, func(t *testing.T) {
			t.Parallel()
			out, err := runBroken(t, odd)
			if err != nil {
				t.Fatalf("the suite failed a driver that %s, as the contract allows (%v); output:\n%s", odd, err, out)
			}
			for _, name := range mustPass {
				if !strings.Contains(string(out), "--- PASS: TestBrokenDriver/"+name+" ") {
					t.Errorf("case %s did not run and pass on a driver that %s; output:\n%s", name, odd, out)
				}
			}
		})
	}
}

func TestSuiteFailsBrokenDrivers(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("running as a child of this test")
	}
	for fault, mustFail := range brokenDrivers {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			out, err := runBroken(t, fault)
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the suite passed a driver that %s (err %v); output:\n%s", fault, err, out)
			}
			for _, name := range mustFail {
				if !strings.Contains(string(out), "--- FAIL: TestBrokenDriver/"+name+" ") {
					t.Errorf("case %s did not catch a driver that %s; output:\n%s", name, fault, out)
				}
			}
			for _, say := range mustSay[fault] {
				if !strings.Contains(string(out), say) {
					t.Errorf("the run on a driver that %s did not say %q; output:\n%s", fault, say, out)
				}
			}
		})
	}
}

// TestBrokenDriver runs the suite on the broken driver its parent names.
func TestBrokenDriver(t *testing.T) {
	fault := os.Getenv(brokenEnv)
	if fault == "" {
		t.Skip("run by TestSuiteFailsBrokenDrivers in a child process")
	}
	conformance.Run(t, func(ctx context.Context, t *testing.T) (conformance.Harness, error) {
		h, err := conformance.MemHarness(ctx, t)
		return brokenHarness{Harness: h, fault: fault, st: &brokenState{}}, err
	})
}

// brokenHarness is MemHarness whose connectors make broken Lockers.
type brokenHarness struct {
	conformance.Harness
	fault string
	st    *brokenState
}

func (h brokenHarness) NewConnector(ctx context.Context) (driver.Connector, error) {
	c, err := h.Harness.NewConnector(ctx)
	return brokenConnector{Connector: c, h: h, n: int(h.st.connectors.Add(1))}, err
}

func (h brokenHarness) RestartEmpty(ctx context.Context) error {
	err := h.Harness.(conformance.Restarter).RestartEmpty(ctx)
	h.st.restarted.Store(true)
	return err
}

func (h brokenHarness) Capabilities() conformance.Capabilities {
	c := h.Harness.Capabilities()
	if h.fault == "unknownLacks" { // the package doc's old example, and a typo
		c.Lacks = map[string]string{"Vanish": "cannot be faulted", "LossRepoted": "typo"}
	}
	if strings.HasPrefix(h.fault, "unqueued") {
		c.Queue = false
	}
	return c
}

type brokenConnector struct {
	driver.Connector
	h brokenHarness
	n int // 1 for the case's first connector
}

func (c brokenConnector) Connect(ctx context.Context) (driver.Locker, error) {
	l, err := c.Connector.Connect(ctx)
	return brokenLocker{Locker: l, h: c.h, n: c.n}, err
}

// brokenLocker is the mem driver with one fault.
type brokenLocker struct {
	driver.Locker
	h brokenHarness
	n int // its connector's
}

func (l brokenLocker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	switch l.h.fault {
	case "grantsEveryAcquire":
		g, err := l.Locker.Acquire(ctx, req)
		if errors.Is(err, driver.ErrLocked) {
			return driver.Grant{Token: 1, Validity: req.TTL}, nil
		}
		return g, err
	case "neverReportsLoss":
		req.OnLost = nil
	case "requeuesEachAttempt": // as a sorted set scored by the attempt's time would
		if req.Wait {
			l.Locker.Release(ctx, req.Key, req.Owner)
		}
	case "neverRefreshesPlace": // only an owner's first waiting attempt sets how long its place lasts
		if _, seen := l.h.st.waited.LoadOrStore(req.Owner, true); seen {
			req.Wait = false
		}
	case "deadHeadKept":
		return l.keepDeadHead(ctx, req)
	case "restartGrantsWaiters": // after a restart, a waiter takes its queue's loss for a free key
		g, err := l.Locker.Acquire(ctx, req)
		if errors.Is(err, driver.ErrLocked) && req.Wait && l.h.st.restarted.Load() {
			return driver.Grant{Token: 1, Validity: req.TTL}, nil
		}
		return g, err
	case "restartStrandsWaiters": // after a restart, the key stays kept for a waiter it forgot
		if l.h.st.restarted.Load() {
			return driver.Grant{}, driver.ErrLocked
		}
	case "starvesOneClient":
		if l.n == 1 {
			return driver.Grant{}, driver.ErrLocked
		}
	}
	g, err := l.Locker.Acquire(ctx, req)
	if err == nil {
		l.h.st.granted.Store(req.Owner, true)
		if l.h.fault == "closeKeepsPlaces" {
			l.h.st.held(l.n, req.Key, req.Owner)
		}
	}
	return g, err
}

// keepDeadHead refuses everyone but the first waiter to have queued on a
// key until that one takes the key or leaves: a queue whose places never
// run out.
func (l brokenLocker) keepDeadHead(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	st := l.h.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if head, ok := st.heads[req.Key]; ok && head != req.Owner {
		return driver.Grant{}, driver.ErrLocked
	}
	g, err := l.Locker.Acquire(ctx, req)
	switch {
	case err == nil:
		delete(st.heads, req.Key)
	case errors.Is(err, driver.ErrLocked) && req.Wait:
		if st.heads == nil {
			st.heads = make(map[string]driver.Owner)
		}
		if _, ok := st.heads[req.Key]; !ok {
			st.heads[req.Key] = req.Owner
		}
	}
	return g, err
}

func (l brokenLocker) Release(ctx context.Context, key string, owner driver.Owner) error {
	switch l.h.fault {
	case "unlockFreesAny":
		return l.h.Vanish(ctx, key) // whoever holds it
	case "leavingKeepsPlace": // a waiter's Release leaves its place in the queue
		if _, granted := l.h.st.granted.Load(owner); !granted {
			return fmt.Errorf("broken: %w", driver.ErrNotHeld)
		}
	case "headLeavingKeepsKey": // a waiter leaves, but not a key kept for it (the key reads as free)
		_, granted := l.h.st.granted.Load(owner)
		if _, held, err := l.Locker.Inspect(ctx, key); !granted && err == nil && !held {
			return fmt.Errorf("broken: %w", driver.ErrNotHeld)
		}
	case "restartUnlockSaysReleased": // the grant the restart took reads as released
		if err := l.Locker.Release(ctx, key, owner); err != nil && !(errors.Is(err, driver.ErrNotHeld) && l.h.st.restarted.Load()) {
			return err
		}
		return nil
	case "restartUnlockFreesWaiter": // after a restart, a Release frees whoever holds the key
		err := l.Locker.Release(ctx, key, owner)
		if errors.Is(err, driver.ErrNotHeld) && l.h.st.restarted.Load() {
			l.h.Vanish(ctx, key)
		}
		return err
	case "wakesEveryWaiter":
		err := l.Locker.Release(ctx, key, owner)
		if err == nil {
			l.h.st.wakeAll(key)
		}
		return err
	}
	return l.Locker.Release(ctx, key, owner)
}

func (l brokenLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	if l.h.fault == "neverReportsLoss" || (strings.HasPrefix(l.h.fault, "restartUnlock") && l.h.st.restarted.Load()) {
		// Blind to losses; after a restart, so that the holder's Unlock
		// reaches Release.
		for i := range batch {
			batch[i].Validity, batch[i].Err = batch[i].TTL, nil
		}
		return
	}
	l.Locker.Renew(ctx, batch)
}

func (l brokenLocker) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	switch strings.TrimPrefix(l.h.fault, "unqueued") {
	case "WatchNeverWakes", "watchNeverWakes":
		return func() {}, nil
	case "WatchIgnoresStop", "watchIgnoresStop":
		if _, err := l.Locker.Watch(key, owner, wake); err != nil {
			return nil, err
		}
		return func() {}, nil
	case "wakesEveryWaiter":
		stop, err := l.Locker.Watch(key, owner, wake)
		if err != nil {
			return nil, err
		}
		return l.h.st.watch(key, wake, stop), nil
	case "wakesUntilStop":
		stop, err := l.Locker.Watch(key, owner, wake)
		if err != nil {
			return nil, err
		}
		return wakeUntilStop(wake, stop), nil
	}
	return l.Locker.Watch(key, owner, wake)
}

func (l brokenLocker) Ping(ctx context.Context) error {
	if l.h.fault == "pingsAfterClose" {
		return nil
	}
	return l.Locker.Ping(ctx)
}

func (l brokenLocker) Close() error {
	switch l.h.fault {
	case "closeKeepsKeys":
		return nil // keys stay held until their TTL
	case "closeKeepsPlaces": // releases its keys, but its waiters keep their places until they run out
		for _, k := range l.h.st.heldBy(l.n) {
			l.Locker.Release(context.Background(), k.key, k.owner)
		}
		return nil
	case "secondCloseFails":
		if err := l.Locker.Ping(context.Background()); errors.Is(err, driver.ErrClosed) {
			return err
		}
	}
	return l.Locker.Close()
}

// brokenState is what a broken driver keeps across the Lockers of a case.
type brokenState struct {
	connectors atomic.Int32
	restarted  atomic.Bool
	granted    sync.Map // driver.Owner: owners ever granted
	waited     sync.Map // driver.Owner: owners that have queued (neverRefreshesPlace)

	mu      sync.Mutex
	heads   map[string]driver.Owner                  // deadHeadKept
	watches map[string]map[*chan<- struct{}]struct{} // wakesEveryWaiter
	grants  map[int][]keyOwner                       // per Locker (closeKeepsPlaces)
}

type keyOwner struct {
	key   string
	owner driver.Owner
}

// held records a grant made through Locker n.
func (st *brokenState) held(n int, key string, owner driver.Owner) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.grants == nil {
		st.grants = make(map[int][]keyOwner)
	}
	st.grants[n] = append(st.grants[n], keyOwner{key, owner})
}

// heldBy returns the grants ever made through Locker n.
func (st *brokenState) heldBy(n int) []keyOwner {
	st.mu.Lock()
	defer st.mu.Unlock()
	return slices.Clone(st.grants[n])
}

// wakeUntilStop sends spurious wake-ups on wake as fast as it can until the
// stop it returns has returned, as the contract allows.
func wakeUntilStop(wake chan<- struct{}, stop func()) func() {
	done, over := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(over)
		for {
			select {
			case <-done:
				return
			case wake <- struct{}{}:
			default:
			}
			runtime.Gosched()
		}
	}()
	return sync.OnceFunc(func() {
		close(done)
		<-over
		stop()
	})
}

// watch records wake as a watch of key, until stop.
func (st *brokenState) watch(key string, wake chan<- struct{}, stop func()) func() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.watches == nil {
		st.watches = make(map[string]map[*chan<- struct{}]struct{})
	}
	if st.watches[key] == nil {
		st.watches[key] = make(map[*chan<- struct{}]struct{})
	}
	p := &wake
	st.watches[key][p] = struct{}{}
	return func() {
		stop()
		st.mu.Lock()
		defer st.mu.Unlock()
		delete(st.watches[key], p)
	}
}

// wakeAll wakes every watch of key: a herd.
func (st *brokenState) wakeAll(key string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for p := range st.watches[key] {
		select {
		case *p <- struct{}{}:
		default:
		}
	}
}
