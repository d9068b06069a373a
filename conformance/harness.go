package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Harness gives the suite independent clients of one backend, the way two
// pods reach one server, and the faults it needs to inject. Each test case
// gets a fresh Harness from the HarnessMaker passed to Run and closes it.
type Harness interface {
	// NewConnector returns a new Connector to the backend. Connectors from
	// one Harness must reach the same lock space, as two processes would,
	// and share nothing in memory that makes them exclude each other.
	NewConnector(ctx context.Context) (driver.Connector, error)

	// Vanish makes the backend lose the grant on key behind its holder's
	// back, as a fault would: expire or drop it, flush the node, kill the
	// session, remove the lock file. The holder's client must then report
	// the lease lost within Capabilities.LossWithin.
	Vanish(ctx context.Context, key string) error

	// Abandon leaves key held by a holder that then dies without releasing
	// it (a crashed process): the backend must free it by itself, at TTL
	// or at session end, within Capabilities.FreeWithin. It returns once
	// the key is held by the doomed holder.
	Abandon(ctx context.Context, key string) error

	// Capabilities declares what the backend does and how fast.
	Capabilities() Capabilities

	// Close frees what the Harness made.
	Close() error
}

// HarnessMaker makes a Harness for one test case.
type HarnessMaker func(ctx context.Context, t *testing.T) (Harness, error)

// Capabilities declares a driver's features and bounds. A feature it lacks
// makes the cases that need it skip, by name and with the reason given here,
// never silently.
type Capabilities struct {
	// Fencing: grants carry strictly increasing tokens. When false,
	// WithFencing must fail with an error matching errors.ErrUnsupported.
	Fencing bool

	// TTL: grants expire unless renewed (Redis, mem), and have a Validity.
	// When false, grants last until release or session end (PostgreSQL,
	// file): their Validity is 0, and Renew with TTL 0 verifies them.
	TTL bool

	// LossWithin bounds how soon after Vanish the holder reports the loss.
	// Default 10s.
	LossWithin time.Duration

	// FreeWithin bounds how soon after Abandon the key is free again.
	// Default 30s.
	FreeWithin time.Duration

	// Queue: the driver keeps a wait queue (driver.AcquireRequest.Wait):
	// a release keeps the key for the oldest waiter, wakes only its Watch,
	// and waiters are served in arrival order. The Queue/ cases that check
	// the queue itself skip without it, and Driver/Watch then expects every
	// watcher woken on a release. Those cases, and Driver/Watch with Queue,
	// expect the oldest waiter served: a driver that queues but cannot
	// promise arrival order names each of "Queue/FIFO",
	// "Queue/CancelMidQueue", "Queue/HeadKilled", "Queue/OneWake" and
	// "Driver/Watch" in Lacks, saying why.
	Queue bool

	// Lacks names cases the backend cannot take part in, with the reason,
	// e.g. {"LossReported": "Vanish cannot fault this backend"}. The names
	// are listed in the package doc; one that is no case fails the run.
	Lacks map[string]string
}

// Restarter is a Harness that can restart its backend empty, for the case
// Queue/RestartEmpty. A Harness without it skips that case, saying so.
type Restarter interface {
	// RestartEmpty restarts the backend (every node of it) without its
	// data, as a server without persistence restarts: every grant and every
	// wait queue is lost, connections may break, and holders find out by
	// renewing. It returns once the backend serves again.
	RestartEmpty(ctx context.Context) error
}
