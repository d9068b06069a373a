// Package driver defines the interface a lock backend implements for package
// mutex, in the manner of database/sql/driver.
//
// A driver makes single attempts: acquire once, release once, renew a batch
// once. Everything that loops or keeps time (waiting for a held key, renewal
// scheduling, lost-lease detection, exclusion between Mutex values of one
// client) lives once in package mutex and is never copied into a driver.
//
// The interface is closed: a backend that lacks a feature returns an error
// matching ErrUnimplemented instead of the portable layer probing optional
// interfaces, so middleware wrappers stay simple.
//
// Most users never import this package; they import a driver for its side
// effect and open a client by URL:
//
//	import _ "github.com/mutexkit/mutexkit/driver/postgres"
//
//	client, err := mutex.Open("postgres://app@db/app")
//
// A driver author implements Driver, Connector and Locker, registers the
// Driver for each URL scheme it serves with mutex.Register in an init
// function, and proves it with conformance.Run. The error values below are
// the ones users test too: mutex exports them under the same names.
//
// # What package mutex guarantees a driver
//
// The driver need not check again what package mutex has checked:
//
//   - a key is 1 to mutex.MaxKeyLen bytes (any bytes);
//   - an Owner is never zero, and is new for each acquire (a retried
//     attempt keeps it);
//   - a TTL is within [mutex.MinTTL, mutex.MaxTTL];
//   - a Watch channel is never nil, and has a buffer;
//   - Close is called once by a Client, after its own releases; a call in
//     flight may still arrive during or after it, and gets ErrClosed.
//
// Calls are made from any goroutine, concurrently, including several on one
// key (a release racing an acquire of another owner).
package driver

import (
	"context"
	"time"
)

// Driver is the interface a backend registers with mutex.Register.
type Driver interface {
	// OpenConnector parses dsn and returns a Connector. It must not do I/O:
	// opening is lazy, as in database/sql, and mutex.Client.Ping checks for
	// real. A malformed DSN gets an error matching ErrInvalid whose text
	// never contains a password.
	OpenConnector(dsn string) (Connector, error)
}

// Connector is a configured backend, not yet connected. Every driver
// exports NewConnector(dsn, ...) and a From... constructor that wraps a
// client the application already has (a *sql.DB, a redigo pool);
// mutex.NewClient takes the Connector they return.
type Connector interface {
	// Connect returns a Locker. Package mutex calls it once per Client, on
	// the first operation that needs the backend; if it fails, the
	// operation returns the error and a later operation calls it again.
	Connect(ctx context.Context) (Locker, error)

	// DriverName names the driver ("postgres", "redis"), for errors and
	// telemetry.
	DriverName() string
}

// Locker is one client's connection to a backend. All methods must be safe
// for concurrent use. Every method makes one attempt and returns without
// waiting for a held key, and none retries. A driver with a wait queue may
// hold an owner's place on the backend after Acquire returned ErrLocked
// (a blocking request on a connection of its own, as MySQL's GET_LOCK
// queues waiters): until the owner's attempt takes the key, Release,
// QueueHold after the owner's last attempt, or Close. A key that wait
// obtains is the key kept for the owner.
//
// Errors: a method returns an error matching one of this package's
// sentinel errors (ErrLocked, ErrNotHeld, ErrUnimplemented, ErrUnavailable,
// ErrDenied, ErrInvalid, ErrClosed) wherever one applies, wrapped with %w so
// the backend's own error stays reachable. When ctx ends during a call the
// error must match ctx.Err(). No error text may contain a password or a
// key (keys may carry customer data; mutex.Error.Key has the key), nor
// anything derived from a key that shows it, such as a file name.
type Locker interface {
	// Acquire makes one attempt to take req.Key for req.Owner.
	//
	// It returns ErrLocked when another owner holds the key. It must never
	// grant a key that another owner holds, and must not re-grant a key the
	// same owner holds (a retried attempt with the same Owner may return
	// the existing grant, as it is that attempt's own).
	//
	// When req.Fencing is set and the backend cannot issue fencing tokens
	// it returns ErrUnimplemented and takes nothing.
	//
	// If Acquire returns any error other than ErrLocked the attempt may
	// still have taken the key on the server (a reply lost in flight);
	// package mutex then calls Release with the same Owner.
	Acquire(ctx context.Context, req AcquireRequest) (Grant, error)

	// Release gives up key if owner holds it. It returns ErrNotHeld when
	// owner does not hold key (never held, expired, taken over, already
	// released); it must never release a key held by another owner.
	// Repeating a Release is safe: the second returns ErrNotHeld.
	//
	// A driver with a wait queue also takes owner out of key's queue (a
	// Lock that gave up calls Release), and if the key was kept for owner
	// (see AcquireRequest.Wait) passes it on to the next waiter.
	Release(ctx context.Context, key string, owner Owner) error

	// Renew extends or verifies each lease in batch, in as few round trips
	// as the backend allows (one per node or per session), and records the
	// outcome in each element: Validity (or nil Err) on success, or Err.
	// Err matches ErrNotHeld when the owner no longer holds the key (the
	// lease is lost), and anything else when the outcome is unknown.
	//
	// An element with a TTL extends an expiring grant by it; package mutex
	// retries an unknown outcome until the lease's validity runs out.
	//
	// An element with TTL 0 verifies a session grant (Grant.Validity 0):
	// package mutex sends one such batch every heartbeat, and this check is
	// how a session backend's losses are found. The driver confirms that
	// the session it granted the key on is alive and still holds it (for
	// example one query per session), and sets Err to ErrNotHeld if not.
	// It needs no goroutine of its own for this. A lease whose
	// verifications keep failing is reported lost after two heartbeats and
	// a half.
	Renew(ctx context.Context, batch []Renewal)

	// Watch registers wake to receive a value, sent without blocking, when
	// owner's next attempt on key may succeed: with a wait queue, when the
	// key is released and owner is at the head of the queue, so that one release wakes one waiter; without one,
	// whenever key may have become free. Package mutex calls Watch after a
	// waiting attempt found the key held and then tries again before it
	// waits, so a release in between is not missed; it calls stop when it
	// no longer waits. Wake-ups are hints: spurious ones are allowed and
	// mutex still polls with backoff (at least every QueueHold/3), so a
	// backend that cannot signal returns ErrUnimplemented, and so does one
	// that would see only its own Locker's releases (mutex then polls
	// faster than behind a working Watch). A driver that
	// sees releases only through its queue may return ErrUnimplemented for
	// an owner it has not queued.
	Watch(key string, owner Owner, wake chan<- struct{}) (stop func(), err error)

	// Inspect reports whether key is held and, as far as the backend keeps
	// it, by whom, without taking it. A backend that cannot tell returns
	// ErrUnimplemented.
	Inspect(ctx context.Context, key string) (h Holder, held bool, err error)

	// Ping checks that the backend is reachable and fit to hold locks.
	Ping(ctx context.Context) error

	// Close releases every key this Locker holds (or lets the backend drop
	// them, as closing a session does), stops background work and waits
	// for it, within a bounded time. Calls after Close return ErrClosed; a
	// second Close returns nil.
	Close() error
}

// QueueHold is how long a driver with a wait queue keeps a waiter's place
// (and a key kept for it) after the waiter's last attempt. Package mutex,
// while it waits, makes an attempt at least every QueueHold/3, so a live
// waiter never loses its place and a dead one stalls those behind it for
// QueueHold at most.
const QueueHold = 3 * time.Second

// AcquireRequest is one acquire attempt.
type AcquireRequest struct {
	Key   string
	Owner Owner

	// TTL is how long a grant lasts unless renewed, for backends whose
	// grants expire. Session backends ignore it.
	TTL time.Duration

	// Fencing requires a fencing token: a driver that cannot issue one
	// returns ErrUnimplemented.
	Fencing bool

	// Wait is set when the caller waits for the key if it is held (Lock;
	// TryLock leaves it false). A driver with a wait queue then serves
	// waiters in turn: an attempt with Wait that finds the key held (or
	// kept for another waiter) puts Owner at the tail of key's queue, or
	// keeps its place there, and returns ErrLocked; when the key is
	// released, the backend keeps it for the waiter at the head, for that
	// waiter alone (an attempt by anyone else, with Wait or not, gets
	// ErrLocked), and wakes it through Watch. A waiter keeps its place for
	// QueueHold after its last attempt; then it is passed over (its
	// process died), and so is a key kept for it. (A driver that answers
	// some attempts itself, nothing having changed for the waiter, counts
	// from the last one it sent, and sends one at least every QueueHold/3.)
	// Close takes the Locker's waiters out of their queues. A grant or a Release
	// takes the owner out of the queue. An attempt that queues Owner
	// returns once its place is taken on the backend, so waiters are
	// queued in the order of their attempts. The queue only orders who is
	// granted the key next: it never changes who holds it.
	Wait bool

	// Holder describes who asks, for backends that store it so Inspect can
	// tell (package mutex sets Host, PID and Since; Token and Session are
	// the backend's to report, and a caller leaves them zero).
	Holder Holder

	// OnLost may be called, at most once, from any goroutine and without
	// blocking for long, when the driver learns that the grant is gone
	// before package mutex asks (a session's connection failed during
	// another call, a file watch fired): it reports the loss sooner than
	// the next Renew would. It is never required: Renew finds every loss.
	// It may be called after Release.
	OnLost func(err error)
}

// Grant is a successful acquire.
type Grant struct {
	// Token is a fencing token: from 1, strictly increasing per key for as
	// long as the backend keeps its data. 0 means the driver does not fence.
	Token uint64

	// Validity is how long, counted from just before the attempt was
	// begun, the grant is certain to hold without renewal (TTL less clock
	// drift). 0 means a session grant: it does not expire, and lasts until
	// Release or until the session ends, which Renew (TTL 0) finds.
	Validity time.Duration
}

// Renewal is one lease in a Renew batch. Key, Owner and TTL are input;
// Validity and Err are set by the driver.
type Renewal struct {
	Key   string
	Owner Owner
	TTL   time.Duration // 0: verify a session grant

	// Validity is, on success, how long from just before the Renew call
	// was begun the lease is certain to hold.
	Validity time.Duration
	Err      error
}

// Holder describes the holder of a key, as far as the backend keeps it.
// Zero fields are unknown.
//
// Session is the backend's own id of the session or connection that holds
// the key, as the server's views show it and as an operator passes it to
// end that session (a PostgreSQL backend pid for pg_terminate_backend, a
// MySQL connection id for KILL CONNECTION). It is a string so that any
// backend's id fits, and empty where the backend has none (expiring keys,
// files) or does not tell. Unlike PID, it names no process of the client.
type Holder struct {
	Host    string    // host name of the holding process
	PID     int       // its process id
	Since   time.Time // when it acquired the key, by its wall clock
	Token   uint64    // its fencing token
	Session string    // the backend's id of the holding session; "" if none or unknown
}
