// Package conformance is the suite every mutexkit driver must pass, in the
// manner of gocloud.dev's drivertest: one entry point, a Harness that makes
// clients of one backend and injects faults, and a flat list of named cases.
//
// A driver calls it from one test:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, func(ctx context.Context, t *testing.T) (conformance.Harness, error) {
//			return newHarness(ctx, t)
//		})
//	}
//
// Cases run through package mutex, as users do, except the "Driver/..."
// cases and Queue/FIFO, Queue/CancelMidQueue, Queue/HeadKilled and
// Queue/OneWake, which check the driver's single calls directly. Those four
// check a wait queue itself and need Capabilities.Queue; Queue/RestartEmpty
// needs a Harness that is also a Restarter. Run them under -race. Cases a
// backend cannot take part in are declared by name in Capabilities.Lacks
// and skipped saying so, never silently; a name that is no case fails the
// run. RunCase runs one case alone, for a harness on a backend of that
// case's own: a private server it restarts, while Run takes a shared one.
// Options passed to Run (middleware, say) apply to every client the suite
// opens, so a middleware proves it keeps drivers conformant by running the
// suite stacked over one, MemHarness needing no server:
//
//	conformance.Run(t, conformance.MemHarness, mutex.WithMiddleware(m))
//
// # Cases
//
// The cases, in the order they run, by the names Capabilities.Lacks takes:
//
//   - Exclusion: goroutines on three clients take one key in turn; never two holders, no lost update.
//   - TryLockHeld: TryLock of a key another client holds fails with ErrLocked.
//   - LockWaitsForRelease: Lock waits for the holder's Unlock, then takes the key.
//   - LockCancel: a waiting Lock ended by cancel returns context.Canceled and leaves nothing held.
//   - LockDeadline: the same, ended by a deadline: context.DeadlineExceeded.
//   - DoubleUnlock: a second Unlock returns ErrNotHeld, not ErrLockLost.
//   - LossReported: a grant Vanish removed is reported lost (Done, Err, Do's context) within LossWithin.
//   - StaleUnlock: the Unlock of a vanished lease does not free the key's next holder.
//   - AbandonedLockFrees: a key Abandon left held is free again within FreeWithin.
//   - RenewalKeepsLease: a lease held for three TTLs stays held, renewed, or verified if a session grant.
//   - FencingTokens: tokens strictly increase across clients; without Fencing, WithFencing fails with errors.ErrUnsupported.
//   - KeysIndependent: holding one key does not hold another.
//   - ThousandKeys: one client holds 1,000 keys and another is refused each.
//   - OddKeys: unicode, spaces, "../", NUL bytes and 1 KiB keys are stored safely and kept apart.
//   - Do: Do holds the key while fn runs and unlocks after an error, a panic or a cancelled context.
//   - MinHold: WithMinHold keeps the key held after Unlock until the hold has passed.
//   - Inspect: Inspect tells a free key from a held one, and what it says of the holder is true.
//   - Close: Client.Close ends its leases (ErrClosed, not a loss) and frees their keys.
//   - NoGoroutineAfterClose: no goroutine outlives Client.Close.
//   - Driver/ReleaseNeedsOwner: Release by a stranger returns driver.ErrNotHeld and frees nothing.
//   - Driver/RetrySameOwner: an Acquire retried with its owner finds its own grant.
//   - Driver/RenewNeedsOwner: Renew (extending a grant, or verifying a session grant) by a stranger, or of a key never held, returns driver.ErrNotHeld; by the owner it succeeds.
//   - Driver/RenewFindsLoss: after Vanish, Renew returns driver.ErrNotHeld within LossWithin, without OnLost.
//   - Driver/CloseReleases: Locker.Close frees every key the Locker holds at once, not at their TTL.
//   - Driver/AfterClose: a second Close returns nil; every other call after Close returns driver.ErrClosed.
//   - Driver/Watch: Watch returns driver.ErrUnimplemented, or wakes on another client's release (with Capabilities.Queue, the head of the queue's watch) and not after stop.
//   - Queue/FIFO: waiters are served in the order they queued, whatever the order of their later attempts.
//   - Queue/CancelMidQueue: a waiter that leaves (Release) mid-queue, or at the head with the key kept for it, or whose Locker closes there, holds up nobody: the next is served within driver.QueueHold/2.
//   - Queue/HeadKilled: waiters asking every 500 ms keep their places past driver.QueueHold, and a head that stops asking without leaving is passed over within driver.QueueHold (+2 s) of its last attempt, for the next in arrival order.
//   - Queue/OneWake: a release wakes the head of the queue and no other waiter; spurious wake-ups are forgiven up to one per four releases.
//   - Queue/RestartEmpty: after Restarter.RestartEmpty, every waiter is served, one at a time, and the lost holder's Unlock says so (mutex.ErrLockLost) and frees nothing.
//   - Queue/Contention: 3 clients x 50 goroutines on one key: never two holders, and, on a driver with a queue, none passed over more than 1,500 times.
package conformance

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/mutex"
)

// caseTimeout bounds each case, so a hang fails with a name.
const caseTimeout = 2 * time.Minute

// suiteTTL is the lease length the suite uses where expiry is not under
// test: long enough not to lapse on a loaded 2-core machine under -race.
const suiteTTL = 2 * time.Second

type testCase struct {
	name  string
	needs func(Harness, Capabilities) (ok bool, why string) // nil: every driver
	run   func(f *fixture)
}

// Run runs every case against the backend newHarness reaches. opts apply to
// every client the suite opens.
func Run(t *testing.T, newHarness HarnessMaker, opts ...mutex.Option) {
	t.Helper()
	checkLacks(t, newHarness)
	for _, c := range cases {
		runCase(t, c, newHarness, opts)
	}
}

// RunCase runs the one case named name (a name Capabilities.Lacks takes),
// as Run runs it, for a backend that serves that case alone: a private
// server a Restarter restarts, say, while the other cases run on a shared
// one. A name that is no case fails t.
func RunCase(t *testing.T, name string, newHarness HarnessMaker, opts ...mutex.Option) {
	t.Helper()
	i := slices.IndexFunc(cases, func(c testCase) bool { return c.name == name })
	if i < 0 {
		t.Fatalf("RunCase: no case %q; the cases are %s", name, strings.Join(caseNames(), ", "))
	}
	checkLacks(t, newHarness)
	runCase(t, cases[i], newHarness, opts)
}

// runCase runs c as a subtest, on a Harness of its own.
func runCase(t *testing.T, c testCase, newHarness HarnessMaker, opts []mutex.Option) {
	t.Run(c.name, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), caseTimeout)
		defer cancel()
		h, err := newHarness(ctx, t)
		if err != nil {
			t.Fatalf("harness: %v", err)
		}
		t.Cleanup(func() {
			if err := h.Close(); err != nil {
				t.Errorf("harness Close: %v", err)
			}
		})
		caps := h.Capabilities()
		if caps.LossWithin <= 0 {
			caps.LossWithin = 10 * time.Second
		}
		if caps.FreeWithin <= 0 {
			caps.FreeWithin = 30 * time.Second
		}
		if why, ok := caps.Lacks[c.name]; ok {
			t.Skipf("driver declares it lacks %s: %s", c.name, why)
		}
		if c.needs != nil {
			if ok, why := c.needs(h, caps); !ok {
				t.Skipf("%s: %s", c.name, why)
			}
		}
		c.run(&fixture{T: t, ctx: ctx, h: h, caps: caps, opts: opts})
	})
}

// checkLacks fails the run, before any case, if Capabilities.Lacks names a
// case that does not exist: a misspelt name would skip nothing, silently.
func checkLacks(t *testing.T, newHarness HarnessMaker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), caseTimeout)
	defer cancel()
	h, err := newHarness(ctx, t)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	lacks := h.Capabilities().Lacks
	if err := h.Close(); err != nil {
		t.Errorf("harness Close: %v", err)
	}
	var unknown []string
	for name := range lacks {
		if !slices.ContainsFunc(cases, func(c testCase) bool { return c.name == name }) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		t.Fatalf("Capabilities.Lacks names no case: %q; the cases are %s", unknown, strings.Join(caseNames(), ", "))
	}
}

func caseNames() []string {
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.name
	}
	return names
}

// fixture is what a case works with.
type fixture struct {
	*testing.T
	ctx  context.Context
	h    Harness
	caps Capabilities
	opts []mutex.Option
}

// client opens a new client of the backend, closed when the case ends.
func (f *fixture) client() *mutex.Client {
	f.Helper()
	conn, err := f.h.NewConnector(f.ctx)
	if err != nil {
		f.Fatalf("NewConnector: %v", err)
	}
	c := mutex.NewClient(conn, f.opts...)
	f.Cleanup(func() { c.Close() })
	return c
}

// lock takes key on c or fails the case.
func (f *fixture) lock(c *mutex.Client, key string, opts ...mutex.MutexOption) *mutex.Lease {
	f.Helper()
	l, err := c.NewMutex(key, append([]mutex.MutexOption{mutex.WithTTL(suiteTTL)}, opts...)...).Lock(f.ctx)
	if err != nil {
		f.Fatalf("Lock(%.40q): %v", key, err)
	}
	return l
}

// unlock releases l or fails the case.
func (f *fixture) unlock(l *mutex.Lease) {
	f.Helper()
	if err := l.Unlock(f.ctx); err != nil {
		f.Fatalf("Unlock(%.40q): %v", l.Key(), err)
	}
}

// tryLock makes one attempt on c.
func (f *fixture) tryLock(c *mutex.Client, key string, opts ...mutex.MutexOption) (*mutex.Lease, error) {
	return c.NewMutex(key, append([]mutex.MutexOption{mutex.WithTTL(suiteTTL)}, opts...)...).TryLock(f.ctx)
}

// mustBeLocked fails unless key is held for c.
func (f *fixture) mustBeLocked(c *mutex.Client, key, why string) {
	f.Helper()
	l, err := f.tryLock(c, key)
	if err == nil {
		l.Unlock(f.ctx)
		f.Fatalf("TryLock(%.40q) succeeded, but %s", key, why)
	}
	if !isLocked(err) {
		f.Fatalf("TryLock(%.40q): %v; want an error matching mutex.ErrLocked (%s)", key, err, why)
	}
}

// waitDone fails unless l's Done closes within d.
func (f *fixture) waitDone(l *mutex.Lease, d time.Duration, what string) {
	f.Helper()
	select {
	case <-l.Done():
	case <-time.After(d):
		f.Fatalf("%s: lease's Done did not close within %v", what, d)
	case <-f.ctx.Done():
		f.Fatalf("%s: %v", what, f.ctx.Err())
	}
}
