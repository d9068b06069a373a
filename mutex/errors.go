package mutex

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mutexkit/mutexkit/driver"
)

// Errors returned by this package, to be checked with errors.Is. They are
// the values drivers return (ErrLocked is driver.ErrLocked), so one set of
// names serves users, middleware and drivers. An error that ends because a
// context ended also matches that context's error.
var (
	// ErrLocked: the key is held, by another client or by another Mutex of
	// this client (TryLock, TryDo; a Lock whose context ended while it was
	// held).
	ErrLocked = driver.ErrLocked

	// ErrNotHeld: Unlock of a lease that is no longer held: already
	// unlocked, nil, lost (then the error also matches ErrLockLost), or
	// ended by Close (then it also matches ErrClosed).
	ErrNotHeld = driver.ErrNotHeld

	// ErrLockLost: the lease ended without Unlock: it expired, its session
	// died, or renewals failed until its validity ran out. The critical
	// section may have run unprotected. (A lease ended by Client.Close
	// matches ErrClosed instead.)
	ErrLockLost = errors.New("mutex: lease lost")

	// ErrUnavailable: the backend could not be reached or did not answer
	// in time. Lock waits it out; its error keeps it when its context ends
	// first.
	ErrUnavailable = driver.ErrUnavailable

	// ErrDenied: the backend refused the client: wrong credentials, or a
	// role, database or database index it does not have. A configuration
	// error: Lock does not wait it out, as it does an unreachable backend.
	ErrDenied = driver.ErrDenied

	// ErrClosed: the Client was closed, before the operation or while the
	// lease was held.
	ErrClosed = driver.ErrClosed

	// ErrInvalid: a key, option or DSN is malformed. The message says which.
	ErrInvalid = driver.ErrInvalid
)

// Causes this package finds itself; errors carrying them also match the
// exported error of the same meaning.
var (
	errClientClosed = fmt.Errorf("client %w", ErrClosed)
	errLocalHeld    = fmt.Errorf("another Mutex of this client holds it: %w", ErrLocked)
)

// Error describes a failed operation. Its message leaves out the key, which
// may carry customer data; the Key field has it. It matches, with errors.Is,
// this package's error that applies (ErrLocked, ErrLockLost, ...) and the
// error that caused it (a driver's, a context's).
type Error struct {
	Op  string // "lock", "trylock", "unlock", "ping", "open", "close"
	Key string // empty for client operations
	Err error  // the cause

	kinds []error // this package's errors that apply
}

func (e *Error) Error() string {
	msg := "mutex: " + e.Op
	if len(e.kinds) > 0 {
		msg += ": " + strings.TrimPrefix(e.kinds[0].Error(), "mutex: ")
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap lets errors.Is and errors.As reach both this package's error and
// the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return e.kinds
	}
	return append(e.kinds[:len(e.kinds):len(e.kinds)], e.Err)
}

func opError(op, key string, err error, kinds ...error) *Error {
	return &Error{Op: op, Key: key, Err: err, kinds: kinds}
}

// ctxErr is the error for an operation ended by ctx: it matches ctx.Err()
// and, when one was given, the cause.
func ctxErr(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if errors.Is(cause, err) {
		return cause
	}
	return fmt.Errorf("%w: %w", err, cause)
}
