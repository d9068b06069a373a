package middleware

// ScopeName names the tracer and the meter: this package's import path.
const ScopeName = "github.com/mutexkit/mutexkit/middleware"

// Span names: one per driver operation, and one for a whole Lock or
// TryLock, which the driver operations it makes are children of.
const (
	SpanLock    = "mutexkit.lock"
	SpanTryLock = "mutexkit.trylock"
	SpanAcquire = "mutexkit.acquire"
	SpanRelease = "mutexkit.release"
	SpanRenew   = "mutexkit.renew"
	SpanInspect = "mutexkit.inspect"
	SpanPing    = "mutexkit.ping"
	SpanLost    = "mutexkit.lease.lost"
)

// Instrument names.
const (
	MetricAcquireDuration = "mutexkit.acquire.duration"    // histogram, s: one driver acquire attempt
	MetricWaitDuration    = "mutexkit.lock.wait.duration"  // histogram, s: a whole Lock or TryLock
	MetricHoldDuration    = "mutexkit.lease.hold.duration" // histogram, s: acquisition to release or loss
	MetricLeaseRemaining  = "mutexkit.lease.remaining"     // histogram, s: validity left when a renewal was sent
	MetricAcquired        = "mutexkit.lock.acquired"       // counter: leases acquired
	MetricContended       = "mutexkit.lock.contended"      // counter: attempts that found the key held
	MetricLost            = "mutexkit.lease.lost"          // counter: leases lost
	MetricFailed          = "mutexkit.operation.failed"    // counter: driver operations that failed
	MetricHeld            = "mutexkit.lease.held"          // up-down counter: leases held now
)

// Attribute keys.
const (
	AttrDriver    = "mutexkit.driver"    // driver name, as in mutex.Open
	AttrOperation = "mutexkit.operation" // lock, trylock, acquire, release, renew, inspect, ping
	AttrOutcome   = "mutexkit.outcome"   // acquired, locked, released, renewed, lost, canceled, error, ok
	AttrKeyHash   = "mutexkit.key.hash"  // first 8 bytes of SHA-256 of the key, hex
	AttrKey       = "mutexkit.key"       // the key, with WithRawKeys only
	AttrToken     = "mutexkit.token"     // fencing token
	AttrWait      = "mutexkit.wait"      // seconds a Lock or TryLock took
	AttrAttempts  = "mutexkit.attempts"  // acquire attempts of a Lock
	AttrBatch     = "mutexkit.batch"     // leases in a renewal
)

// Outcomes.
const (
	OutcomeAcquired = "acquired"
	OutcomeLocked   = "locked"
	OutcomeReleased = "released"
	OutcomeRenewed  = "renewed"
	OutcomeLost     = "lost"
	OutcomeError    = "error"
	OutcomeOK       = "ok"
	OutcomeCanceled = "canceled" // a Lock whose context ended first
)
