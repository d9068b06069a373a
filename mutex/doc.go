// Package mutex is mutexkit's portable distributed lock, shaped like
// database/sql: drivers register the URL schemes they serve, an application
// opens a Client with a DSN, and takes locks by key.
//
//	import (
//		"github.com/mutexkit/mutexkit/mutex"
//		_ "github.com/mutexkit/mutexkit/driver/postgres"
//	)
//
//	client, err := mutex.Open("postgres://app@db/app?sslmode=disable")
//	...
//	err = client.NewMutex("nightly-report").TryDo(ctx, func(ctx context.Context) error {
//		return report(ctx) // ctx ends if the lease is lost
//	})
//	if errors.Is(err, mutex.ErrLocked) {
//		return nil // already running in another pod
//	}
//
// TryDo (one attempt, ErrLocked when held) is the cron job's call: every
// replica fires, one runs the job. Do waits for the lock, so every caller
// runs fn in turn: for work each must do, one at a time.
//
// # What this package does once, for every driver
//
//   - Waiting: Lock waits until it holds the key or its context ends. Its
//     attempts ask the driver for a place in the key's wait queue, where the
//     driver keeps one: a release then wakes the waiter at the head alone,
//     and waiters are served in the order they came (each driver's page says
//     what order it gives). Lock wakes when the driver signals its turn and
//     otherwise polls with capped, jittered backoff (at most a second
//     between attempts, which also keeps its place). A Lock that gives up
//     leaves the queue; a grant that races the end of the context is
//     released, and so is one an attempt may have made before failing.
//   - Renewal: leases on backends whose grants expire (Redis, mem) are
//     renewed about every third of their TTL, in batches, by one goroutine per
//     client, however many leases it holds.
//   - Loss detection: a lease is lost when a renewal finds the key gone, when
//     renewals keep failing until its validity (measured on the local
//     monotonic clock from before the acquire was sent, less a margin of a
//     tenth of it, at most one second) runs out, or, on session backends
//     (PostgreSQL, file), when the client's verification of its session
//     leases, every heartbeat (WithHeartbeat), finds the session dead, or
//     cannot verify it for two heartbeats and a half. Then Done closes, Err
//     matches ErrLockLost, the context of Do is cancelled with that cause,
//     and Unlock reports it.
//   - Waiting out outages: Lock waits out a backend that is unreachable
//     (ErrUnavailable), the first connection included, and when its
//     context ends the error keeps the last attempt's outcome: ErrLocked if
//     the key was held, the driver's error if the backend was unreachable.
//     A refusal (ErrDenied: credentials, an unknown database) ends it at once.
//   - Exclusion inside a client: two Mutex values of one client with one key
//     exclude each other here, without leaning on the backend's re-entrancy;
//     those waiting take the key in the order they asked, and only one at a
//     time asks the backend.
//
// # Shutdown
//
// Client.Close ends the leases still held: their Err matches ErrClosed, not
// ErrLockLost, and Do's context is cancelled with cause ErrClosed. A lease
// ended so is released, but its work was cut short: shut down by cancelling
// the contexts of running Do calls, waiting for them to return, then
// calling Close.
//
// # Guarantees and their limits
//
// On a TTL backend a loss is reported before the grant could lapse, provided
// clocks drift less than the driver allows for and this process is never
// paused (GC, SIGSTOP, a VM migration) for longer than the margin. On a
// session backend the server frees the key the moment the session dies, so a
// loss is seen after the fact, at the client's next heartbeat. In both cases a
// holder can go on working for a moment without the lock; fencing tokens
// (Lease.Token, WithFencing) let the guarded resource refuse it.
//
// # Performance
//
// The portable layer adds a fraction of a microsecond and two small
// allocations to the driver's own calls for an uncontended TryLock+Unlock,
// far less than one round trip to a server, and hardly more with a
// thousand other leases held and renewed. docs/BENCHMARKS.md has the
// figures, and compares the server backends with other libraries.
package mutex
