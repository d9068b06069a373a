package mutex

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mutexkit/mutexkit/driver"
)

// Errors returned by this package, to be checked with errors.Is. An error
// that ends because a context ended also matches that context's error.
var (
	// ErrLocked: TryLock found the key held, by another client or by
	// another Mutex of this client.
	ErrLocked = errors.New("mutex: key is held elsewhere")

	// ErrNotHeld: Unlock of a lease that is no longer held: already
	// unlocked, or lost (then the error also matches ErrLockLost).
	ErrNotHeld = errors.New("mutex: lease is not held")

	// ErrLockLost: the lease ended without Unlock: it expired, its session
	// died, or renewals failed until its validity ran out. The critical
	// section may have run unprotected. (A lease ended by Client.Close
	// matches ErrClosed instead.)
	ErrLockLost = errors.New("mutex: lease lost")

	// ErrClosed: the Client was closed, before the operation or while the
	// lease was held.
	ErrClosed = errors.New("mutex: client closed")

	// ErrInvalid: a key, option or DSN is malformed. The message says which.
	ErrInvalid = errors.New("mutex: invalid argument")

	// ErrDenied: the backend refused the client: wrong credentials, or a
	// role, database or database index it does not have. A configuration
	// error: Lock does not wait it out, as it does an unreachable backend.
	ErrDenied = errors.New("mutex: refused by the backend")
)

// Causes this package finds itself; errors carrying them also match the
// exported error of the same meaning.
var (
	errClientClosed = errors.New("client closed")
	errLocalHeld    = errors.New("key is held by another Mutex of this client")
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

// wrapError maps a cause, a driver's error or this package's own, to this
// package's errors, in one place.
func wrapError(op, key string, err error) error {
	switch {
	case err == errClientClosed:
		return opError(op, key, nil, ErrClosed)
	case err == errLocalHeld: // matches driver.ErrLocked too, for middleware
		return opError(op, key, err, ErrLocked, driver.ErrLocked)
	case errors.Is(err, driver.ErrLocked):
		return opError(op, key, err, ErrLocked)
	case errors.Is(err, driver.ErrClosed):
		return opError(op, key, err, ErrClosed)
	case errors.Is(err, driver.ErrInvalid):
		return opError(op, key, err, ErrInvalid)
	case errors.Is(err, driver.ErrDenied):
		return opError(op, key, err, ErrDenied)
	}
	return opError(op, key, err)
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
