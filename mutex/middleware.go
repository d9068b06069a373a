package mutex

import (
	"context"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Middleware adds behaviour around a client's driver calls (Wrap) and sees
// what package mutex does between them (Observer): the whole wait of a Lock,
// the hold, a loss found by renewal. Either field may be nil.
//
// With several middleware, the first listed is outermost: its Wrap sees a
// call first, its LockStart runs first and its LockDone last (as deferred
// calls unwind), and its LeaseEnd and Renewed run first.
type Middleware struct {
	// Wrap returns a Locker that adds behaviour and calls next.
	Wrap func(next driver.Locker, info Info) driver.Locker

	// Observer receives events from package mutex, in the manner of
	// net/http/httptrace.
	Observer *Observer
}

// Info describes the client a Middleware is applied to.
type Info struct {
	// Driver is the driver's name (Connector.DriverName).
	Driver string
}

// Observer holds hooks package mutex calls as a client works. Any hook may
// be nil. Hooks run on the caller's goroutine, the client's renewal
// goroutines or a driver's (a loss it reports through OnLost), so they must
// be safe for concurrent use, even for one lease, and must not block.
type Observer struct {
	// LockStart is called when Mutex.Lock or Mutex.TryLock begins. The
	// context it returns is passed to every driver call of that operation,
	// so a span it starts is their parent, and to LockDone.
	LockStart func(ctx context.Context, ev LockStart) context.Context

	// LockDone is called as the Lock or TryLock returns, with the context
	// LockStart returned. (Two hooks rather than a returned closure keep
	// observing free of allocations.)
	LockDone func(ctx context.Context, ev LockDone)

	// LeaseEnd is called once when a lease ends: unlocked, lost, or ended
	// by Client.Close. Its ctx is the lease's context (below).
	LeaseEnd func(ctx context.Context, ev LeaseEnd)

	// Renewed is called with the outcome of each lease's renewal, with the
	// lease's context.
	//
	// The lease's context is the one LockStart returned for the Lock or
	// TryLock that acquired the lease, detached from its cancellation (as
	// by context.WithoutCancel): its values, such as the Lock's span,
	// outlive the call, so that renewals, the lease's end and Do's Unlock
	// (which unlocks with it) are recorded in the Lock's trace rather than
	// each in a trace of its own.
	Renewed func(ctx context.Context, ev Renewed)
}

// LockStart describes a Lock or TryLock that begins.
type LockStart struct {
	Driver string
	Key    string
	Wait   bool // Lock (true) or TryLock (false)
}

// LockDone describes how a Lock or TryLock ended.
type LockDone struct {
	LockStart
	Token    uint64        // fencing token of the lease, when acquired
	Waited   time.Duration // from the start of the operation to its end
	Attempts int           // acquire attempts sent to the driver
	Err      error         // nil when acquired
}

// LeaseEnd describes a lease that ended.
type LeaseEnd struct {
	Driver string
	Key    string
	Held   time.Duration // from acquisition to the end
	// Err is nil when the lease was unlocked. It matches ErrLockLost
	// when the lease was lost, and ErrClosed (and ErrClosed), never
	// mutex.ErrLockLost, when Client.Close ended it: a shutdown, not a loss.
	Err error
}

// Renewed describes one lease's renewal.
type Renewed struct {
	Driver string
	Key    string
	// Remaining is how much of the lease's validity was left when the
	// renewal was sent: its health margin.
	Remaining time.Duration
	Took      time.Duration // how long the renewal call took (one call renews a batch of leases)
	Err       error         // nil when extended
}
