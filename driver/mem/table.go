package mem

import (
	"fmt"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// named holds the process's named tables: the only global state of the
// package, and what lets two clients opened with one DSN share locks.
var named = struct {
	sync.Mutex
	tables map[string]*Table
}{tables: make(map[string]*Table)}

// Named returns the table named name, shared by every client in the process
// opened with that DSN. It is made on first use and lives as long as the
// process.
func Named(name string) *Table {
	named.Lock()
	defer named.Unlock()
	t := named.tables[name]
	if t == nil {
		t = NewTable()
		named.tables[name] = t
	}
	return t
}

// TableOption configures a Table made by NewTable.
type TableOption func(*Table)

// WithClock makes the table read time from now rather than time.Now: a test
// can move it forward to expire grants without sleeping. The client's own
// renewal still runs on the real clock. Wait-queue places run on the
// table's clock too (driver.QueueHold after a waiter's last attempt): a jump
// of QueueHold or more passes over every place, and a clock that stands
// still never passes over a dead head.
func WithClock(now func() time.Time) TableOption {
	return func(t *Table) { t.now = now }
}

// NewTable returns a private lock table, reached only through connectors
// made with FromTable.
func NewTable(opts ...TableOption) *Table {
	t := &Table{
		now:      time.Now,
		grants:   make(map[string]*grant),
		tokens:   make(map[string]uint64),
		queues:   make(map[string][]*waiting),
		watchers: make(map[string]map[*watcher]struct{}),
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Table is one lock space: the backend that the Lockers of its connectors
// share. Its methods are safe for concurrent use.
type Table struct {
	now func() time.Time

	mu       sync.Mutex // guards the table and the state of its Lockers
	grants   map[string]*grant
	tokens   map[string]uint64 // last token per key; kept after release
	queues   map[string][]*waiting
	watchers map[string]map[*watcher]struct{}
}

// grant is a key's holder.
type grant struct {
	owner   driver.Owner
	holder  driver.Holder // who asked, for Inspect
	by      *locker       // the Locker it was granted through
	expires time.Time     // on the table's clock
	token   uint64
	onLost  func(error)
}

// watcher is one Watch registration.
type watcher struct {
	owner driver.Owner
	wake  chan<- struct{}
	by    *locker // whose Close ends it
}

// Drop removes the grant on key, as a fault would, and tells its holder at
// once through AcquireRequest.OnLost (the lease's Done closes). It reports
// whether key was held.
func (t *Table) Drop(key string) bool {
	t.mu.Lock()
	g := t.removeLocked(key)
	t.handOnLocked(key)
	t.mu.Unlock()
	if g != nil && g.onLost != nil {
		g.onLost(fmt.Errorf("mem: grant dropped from the table: %w", driver.ErrNotHeld))
	}
	return g != nil
}

// Expire removes the grant on key without telling its holder, as a Redis
// node that restarted empty would: another client can take the key at once,
// and the holder learns of the loss at its next renewal. It reports whether
// key was held.
func (t *Table) Expire(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.removeLocked(key)
	t.handOnLocked(key)
	return g != nil
}

// RestartEmpty forgets every grant and every wait queue without telling
// anyone, as a Redis node restarted without persistence would: holders
// learn of their loss at their next renewal, and waiters find the keys free
// at their next attempt. Fencing tokens are kept, so they still increase.
func (t *Table) RestartEmpty() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for key := range t.grants {
		t.removeLocked(key)
	}
	clear(t.queues)
}

// Holder reports the fencing token of the grant on key, and whether there
// is one that has not expired.
func (t *Table) Holder(key string) (token uint64, held bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if g := t.liveLocked(key); g != nil {
		return g.token, true
	}
	return 0, false
}

// liveLocked returns the unexpired grant on key. Callers hold mu.
func (t *Table) liveLocked(key string) *grant {
	g := t.grants[key]
	if g != nil && !t.now().Before(g.expires) {
		return nil
	}
	return g
}

// removeLocked deletes the grant on key, expired or not. Callers hold mu,
// and then hand the key on (handOnLocked) unless it is known who takes it.
func (t *Table) removeLocked(key string) *grant {
	g := t.grants[key]
	if g == nil {
		return nil
	}
	delete(t.grants, key)
	delete(g.by.held, key)
	return g
}
