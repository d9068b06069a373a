package mutex

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Lease is a held lock, returned by Lock and TryLock. It is safe for
// concurrent use. Watch Done (or Err) while working: a lease can be lost
// before Unlock, and then the work is no longer protected.
type Lease struct {
	c     *Client
	key   string
	owner driver.Owner
	ttl   time.Duration

	// Set once acquired, then read-only.
	token    uint64
	acquired time.Time     // monotonic, taken before the acquire was sent
	validity time.Duration // 0: no expiry (session backends)
	// holdUntil: with WithMinHold, the release waits until then; zero
	// without. Counted from the grant's arrival, the safe end for "at
	// least".
	holdUntil time.Time
	// obs: with observers, the context their LockStart returned, without
	// its cancellation; nil without observers. Renewals, the lease's end and
	// Do's Unlock are observed with it, so they join the Lock's trace.
	obs *detachedCtx

	turn chan struct{} // guarded by c.mu: closed when the client hands a waiting lease its key

	mu     sync.Mutex
	state  leaseState
	err    *Error        // why the lease was lost
	done   chan struct{} // made on demand by Done
	lostAt time.Duration // after acquired, the lease counts as lost; 0: never
	onEnd  func(error)   // set by Do: cancels its context on loss

	sched schedule // guarded by c.renew.mu
}

type leaseState uint8

const (
	stateAcquiring leaseState = iota // reserved in the client, not yet granted
	stateHeld
	stateReleasing // unlocked by the user; the client may hold on (WithMinHold)
	stateEnded     // unlocked and released
	stateLost
)

// closedChan is returned by Done for leases that ended before Done was
// first called.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

var (
	errAlreadyUnlocked = errors.New("lease already unlocked")
	errNoLease         = errors.New("no lease (nil): the Lock or TryLock that would have returned it failed")
)

// Key returns the key the lease holds.
func (l *Lease) Key() string { return l.key }

// Token returns the lease's fencing token: from 1, strictly increasing per
// key across every client of the backend, for as long as the backend keeps
// its data. 0 means the driver does not fence. Pass it to the resource the
// lock guards and have that resource refuse tokens older than the newest it
// has seen: it is the only defence against a holder that was paused or cut
// off and does not know yet that its lease is gone.
func (l *Lease) Token() uint64 { return l.token }

// Expires returns when the lease will count as lost unless a renewal
// succeeds first, on the local monotonic clock (compare it with time.Now or
// use time.Until); the zero time for leases that do not expire (session
// backends). A program that must stop before the lock could pass to
// another holder watches it: renewals move it forward.
func (l *Lease) Expires() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lostAt <= 0 {
		return time.Time{}
	}
	return l.acquired.Add(l.lostAt)
}

// Done returns a channel closed when the lease ends: unlocked, lost, or
// ended by Client.Close.
func (l *Lease) Done() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done == nil {
		if l.state != stateHeld {
			return closedChan
		}
		l.done = make(chan struct{})
	}
	return l.done
}

// Err returns nil while the lease is held and after a clean Unlock, an
// error matching ErrLockLost once it is lost, and one matching ErrClosed
// once its client was closed while it was held. It checks the lease's
// validity on the local clock, so it reports an expired lease even before
// the client's renewal machinery has noticed.
func (l *Lease) Err() error {
	l.mu.Lock()
	if l.state == stateHeld && l.pastExpiry() {
		l.mu.Unlock()
		l.lose(errExpired)
		l.mu.Lock()
	}
	defer l.mu.Unlock()
	if l.err == nil {
		return nil // not a typed nil
	}
	return l.err
}

var (
	errExpired    = errors.New("lease validity ran out before a renewal succeeded")
	errUnverified = errors.New("the lease's session could not be verified for two heartbeats and a half")
)

// pastExpiry reports whether the lease's validity has run out. Callers hold
// mu. time.Since reads only the monotonic clock: cheaper than time.Now.
func (l *Lease) pastExpiry() bool {
	return l.lostAt > 0 && time.Since(l.acquired) >= l.lostAt
}

// Unlock releases the lock. It returns an error matching ErrNotHeld if the
// lease was already unlocked (or is nil), one matching both ErrLockLost and
// ErrNotHeld if it was lost: then the critical section may have overlapped
// another holder's, and the caller must be able to tell; and one matching
// ErrClosed and ErrNotHeld if its client was closed first.
//
// With WithMinHold, Unlock returns at once and the client releases the lock
// when the minimum hold has passed. If Unlock fails for another reason (the
// backend is unreachable), the backend frees the lock at TTL or session end.
func (l *Lease) Unlock(ctx context.Context) error {
	if l == nil { // the lease of a Lock that failed: a deferred Unlock must not panic
		return opError("unlock", "", errNoLease, ErrNotHeld)
	}
	l.mu.Lock()
	switch {
	case l.state == stateHeld && l.pastExpiry():
		l.mu.Unlock()
		l.lose(errExpired)
		return l.unlockLostError()
	case l.state == stateLost:
		l.mu.Unlock()
		return l.unlockLostError()
	case l.state != stateHeld:
		l.mu.Unlock()
		return opError("unlock", l.key, errAlreadyUnlocked, ErrNotHeld)
	}
	l.state = stateReleasing
	l.closeDone()
	l.mu.Unlock()
	l.c.observeEnd(l, nil)

	if !l.holdUntil.IsZero() && time.Now().Before(l.holdUntil) {
		l.c.renew.releaseAt(l, l.holdUntil)
		return nil
	}
	err := l.c.lockerNow().Release(ctx, l.key, l.owner)
	l.mu.Lock()
	if l.state == stateReleasing {
		l.state = stateEnded
	}
	l.mu.Unlock()
	l.c.forget(l)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotHeld):
		// Gone on the backend before we released it: lost, unnoticed.
		return opError("unlock", l.key, err, ErrLockLost, ErrNotHeld)
	}
	return opError("unlock", l.key, err)
}

func (l *Lease) unlockLostError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return opError("unlock", l.key, l.err.Err, append(slices.Clone(l.err.kinds), ErrNotHeld)...)
}

// lose ends a held lease as lost. It is safe to call more than once and in
// any state. A lease still being acquired is marked lost, so that start
// refuses it (its Lock, which holds the key's place in the client, then
// gives up); a lease being released after Unlock is left as it is.
//
// When the loss is not the backend's own word that the key is gone (a
// validity that ran out, a session that could not be verified), the grant
// may still be there: it is released in the background, with the lease's
// owner, so that nothing stays held with nobody to free it.
func (l *Lease) lose(cause error) {
	err := opError("lease", l.key, cause, ErrLockLost)
	l.mu.Lock()
	switch l.state {
	case stateAcquiring:
		l.state, l.err = stateLost, err
		l.mu.Unlock()
		return
	case stateHeld:
	default:
		l.mu.Unlock()
		return
	}
	l.state, l.err = stateLost, err
	onEnd := l.onEnd
	l.mu.Unlock()

	c := l.c
	c.forget(l) // before Done closes: whoever Done wakes may take the key again at once
	l.mu.Lock()
	l.closeDone()
	l.mu.Unlock()
	if onEnd != nil {
		onEnd(err)
	}
	c.observeEnd(l, err)
	if !errors.Is(cause, ErrNotHeld) {
		if locker := c.lockerNow(); locker != nil {
			c.releaseInBackground(locker, l.key, l.owner)
		}
	}
}

// end moves a held lease to ended by Close, with err, and reports whether
// it was held. A lease still being acquired is marked so too, so that start
// refuses it. Leases being released after Unlock are left as they are.
func (l *Lease) end(err *Error) bool {
	l.mu.Lock()
	if l.state == stateAcquiring {
		l.state, l.err = stateLost, err
		l.mu.Unlock()
		return false
	}
	if l.state != stateHeld {
		l.mu.Unlock()
		return false
	}
	l.state = stateLost
	l.err = err
	l.closeDone()
	onEnd := l.onEnd
	l.mu.Unlock()
	if onEnd != nil {
		onEnd(err)
	}
	return true
}

// closeDone closes the Done channel if one was handed out. Callers hold mu.
func (l *Lease) closeDone() {
	if l.done != nil {
		close(l.done)
	}
}

// driverLost is the OnLost callback given to the driver.
func (l *Lease) driverLost(err error) { l.lose(err) }

// setOnEnd registers fn to be called if the lease is lost; if it already
// is, fn is called now.
func (l *Lease) setOnEnd(fn func(error)) {
	l.mu.Lock()
	if l.state == stateLost {
		err := l.err
		l.mu.Unlock()
		fn(err)
		return
	}
	l.onEnd = fn
	l.mu.Unlock()
}

func (l *Lease) acquiredYet() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state != stateAcquiring
}

func (l *Lease) pendingRelease() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == stateReleasing
}
