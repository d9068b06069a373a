package middleware

// ScopeName names the tracer and the meter: this package's import path.
const ScopeName = "github.com/mutexkit/mutexkit/middleware"

// Span names: one for a whole Lock or TryLock, and one per driver
// operation. A lease's spans are children of its Lock's span, in its trace:
// the acquire attempts, the release by Do or TryDo, a renewal that failed,
// and its end if it was lost or ended by Client.Close. Renewals that
// succeed make no span.
const (
	SpanLock    = "mutexkit.lock"
	SpanTryLock = "mutexkit.trylock"
	SpanAcquire = "mutexkit.acquire"
	SpanRelease = "mutexkit.release"
	SpanRenew   = "mutexkit.renew" // a renewal of the lease that failed
	SpanInspect = "mutexkit.inspect"
	SpanPing    = "mutexkit.ping"
	SpanLost    = "mutexkit.lease.lost"
	SpanClosed  = "mutexkit.lease.closed" // ended by Client.Close: not an error
)

// Instrument names.
const (
	MetricAcquireDuration = "mutexkit.acquire.duration"    // histogram, s: one driver acquire attempt
	MetricWaitDuration    = "mutexkit.lock.wait.duration"  // histogram, s: a whole Lock or TryLock
	MetricHoldDuration    = "mutexkit.lease.hold.duration" // histogram, s: acquisition to the end, by outcome: released, lost, closed
	MetricLeaseRemaining  = "mutexkit.lease.remaining"     // histogram, s: validity left when a renewal was sent
	MetricAcquired        = "mutexkit.lock.acquired"       // counter: leases acquired
	MetricContended       = "mutexkit.lock.contended"      // counter: attempts that found the key held
	MetricLost            = "mutexkit.lease.lost"          // counter: leases lost (not those ended by Client.Close)
	MetricFailed          = "mutexkit.operation.failed"    // counter: driver operations that failed
	MetricHeld            = "mutexkit.lease.held"          // up-down counter: leases held now
)

// Attribute keys.
const (
	AttrDriver    = "mutexkit.driver"    // driver name, as in mutex.Open
	AttrOperation = "mutexkit.operation" // one of the Operation values below
	AttrOutcome   = "mutexkit.outcome"   // one of the Outcome values below
	AttrLockName  = "mutexkit.lock.name" // the name WithLockName gives the key; absent without it or when ""
	AttrKeyHash   = "mutexkit.key.hash"  // first 8 bytes of SHA-256 of the key, hex
	AttrKey       = "mutexkit.key"       // the key, with WithRawKeys only
	AttrToken     = "mutexkit.token"     // fencing token
	AttrWait      = "mutexkit.wait"      // seconds a Lock or TryLock took
	AttrAttempts  = "mutexkit.attempts"  // acquire attempts of a Lock
	AttrBatch     = "mutexkit.batch"     // leases in a renewal
)

// Operations: the values of AttrOperation, on log records (each record's
// operation) and metrics (the wait-duration histogram's lock and trylock,
// the failed counter's driver operations). Spans say it in their names.
const (
	OperationLock    = "lock"    // a whole Mutex.Lock, its wait included
	OperationTryLock = "trylock" // a whole Mutex.TryLock
	OperationAcquire = "acquire" // one acquire attempt sent to the driver
	OperationRelease = "release" // a release sent to the driver
	OperationRenew   = "renew"   // a renewal sent to the driver
	OperationInspect = "inspect" // Client.Inspect
	OperationPing    = "ping"    // Client.Ping
	OperationLease   = "lease"   // a lease's end: unlocked, lost or closed (log records)
)

// Outcomes: the values of AttrOutcome.
const (
	OutcomeAcquired = "acquired"
	OutcomeLocked   = "locked" // the key was held: contention, not a failure
	OutcomeReleased = "released"
	OutcomeRenewed  = "renewed"
	OutcomeLost     = "lost"
	OutcomeClosed   = "closed" // a lease ended by Client.Close: a shutdown, not a loss
	OutcomeError    = "error"
	OutcomeOK       = "ok"       // Inspect and Ping
	OutcomeCanceled = "canceled" // a Lock whose context ended first
)
