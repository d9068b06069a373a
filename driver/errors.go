package driver

import "errors"

// Sentinel errors a driver wraps, with %w, to say what happened. Package
// mutex exports the same values under the same names (mutex.ErrLocked is
// ErrLocked), so users, middleware and drivers test one vocabulary.
var (
	// ErrLocked: the key is held by another owner.
	ErrLocked = errors.New("key is held by another owner")

	// ErrNotHeld: the owner does not hold the key (released, expired,
	// taken over, never held).
	ErrNotHeld = errors.New("key is not held by this owner")

	// ErrUnimplemented: the backend lacks this feature. It matches
	// errors.ErrUnsupported.
	ErrUnimplemented = unimplementedError{}

	// ErrUnavailable: the backend could not be reached or did not answer in
	// time. The operation may be retried with the same arguments.
	ErrUnavailable = errors.New("backend unavailable")

	// ErrDenied: the backend refused this client: wrong credentials, or a
	// role, database or database index it does not have. Unlike
	// ErrUnavailable it is a configuration error, so nothing retries it
	// (mutex.Mutex.Lock and middleware.Retry return it at once).
	ErrDenied = errors.New("refused by the backend (credentials or configuration)")

	// ErrInvalid: an argument or DSN is malformed. Retrying cannot help.
	ErrInvalid = errors.New("invalid argument")

	// ErrClosed: the Locker, or the Client above it, was closed.
	ErrClosed = errors.New("closed")
)

type unimplementedError struct{}

func (unimplementedError) Error() string        { return "not implemented by this driver" }
func (unimplementedError) Is(target error) bool { return target == errors.ErrUnsupported }
