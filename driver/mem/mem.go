// Package mem is an in-process lock driver, registered as "mem": for tests,
// examples and single-process programs.
//
// Clients opened with the same DSN in one process share one lock table (the
// DSN names it; "mem:" is the default table), so two clients act as two
// nodes of one backend:
//
//	a, _ := mutex.Open("mem://orders")
//	b, _ := mutex.Open("mem://orders") // excludes a's holders
//
// Grants expire at their TTL unless renewed, as on Redis, and carry fencing
// tokens. A table can be given a clock (WithClock) and made to lose grants
// (Table.Drop, Table.Expire), so an application can test how it handles a
// lost lock without sleeping.
package mem

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Name is the name the driver registers under.
const Name = "mem"

func init() { mutex.Register(Name, Driver{}) }

// Driver opens connectors to named tables.
type Driver struct{}

// OpenConnector is NewConnector.
func (Driver) OpenConnector(dsn string) (driver.Connector, error) { return NewConnector(dsn) }

// NewConnector returns a Connector to the table a DSN names: "mem://name"
// (or "mem:name"); "mem:" and "mem://" name the default table. The name
// is taken as written, without unescaping.
func NewConnector(dsn string) (driver.Connector, error) {
	scheme, rest, ok := strings.Cut(dsn, ":")
	if !ok || !strings.EqualFold(scheme, Name) {
		return nil, fmt.Errorf("mem: a DSN is mem://name: %w", driver.ErrInvalid)
	}
	return FromTable(Named(strings.TrimPrefix(rest, "//"))), nil
}

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
// renewal still runs on the real clock.
func WithClock(now func() time.Time) TableOption {
	return func(t *Table) { t.now = now }
}

// NewTable returns a private lock table, reached only through connectors
// made with NewConnector.
func NewTable(opts ...TableOption) *Table {
	t := &Table{
		now:      time.Now,
		grants:   make(map[string]*grant),
		tokens:   make(map[string]uint64),
		watchers: make(map[string]map[chan<- struct{}]struct{}),
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Table is one lock space. Its methods are safe for concurrent use.
type Table struct {
	now func() time.Time

	mu       sync.Mutex
	grants   map[string]*grant
	tokens   map[string]uint64 // last token per key; kept after release
	watchers map[string]map[chan<- struct{}]struct{}
}

type grant struct {
	who     driver.Holder
	owner   driver.Owner
	expires time.Time
	token   uint64
	holder  *locker
	onLost  func(error)
}

// Drop removes the grant on key, as a fault would, and tells its holder at
// once (the lease's Done closes). It reports whether key was held.
func (t *Table) Drop(key string) bool {
	t.mu.Lock()
	g := t.removeLocked(key)
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
	return t.removeLocked(key) != nil
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

// removeLocked deletes the grant on key and wakes watchers. Callers hold mu.
func (t *Table) removeLocked(key string) *grant {
	g := t.grants[key]
	if g == nil {
		return nil
	}
	delete(t.grants, key)
	delete(g.holder.held, key)
	for w := range t.watchers[key] {
		select {
		case w <- struct{}{}:
		default:
		}
	}
	return g
}

// FromTable returns a Connector to t, a table the program made (NewTable)
// or looked up (Named).
func FromTable(t *Table) driver.Connector { return connector{t} }

type connector struct{ t *Table }

func (c connector) DriverName() string { return Name }

func (c connector) Connect(context.Context) (driver.Locker, error) {
	return &locker{t: c.t, held: make(map[string]driver.Owner)}, nil
}

// locker is one client's view of a table. Its state is guarded by the
// table's mutex.
type locker struct {
	t      *Table
	held   map[string]driver.Owner
	closed bool
}

var _ driver.Locker = (*locker)(nil)

var errClosed = fmt.Errorf("mem: %w", driver.ErrClosed)

func (l *locker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	if err := ctx.Err(); err != nil {
		return driver.Grant{}, err
	}
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.closed {
		return driver.Grant{}, errClosed
	}
	if req.TTL <= 0 {
		return driver.Grant{}, fmt.Errorf("mem: TTL %v: %w", req.TTL, driver.ErrInvalid)
	}
	if g := t.liveLocked(req.Key); g != nil {
		if g.owner == req.Owner { // a retry of the attempt that made it
			return driver.Grant{Token: g.token, Validity: req.TTL}, nil
		}
		return driver.Grant{}, fmt.Errorf("mem: %w", driver.ErrLocked)
	}
	t.removeLocked(req.Key) // an expired grant
	t.tokens[req.Key]++
	g := &grant{who: req.Holder, owner: req.Owner, expires: t.now().Add(req.TTL), token: t.tokens[req.Key], holder: l, onLost: req.OnLost}
	t.grants[req.Key] = g
	l.held[req.Key] = req.Owner
	return driver.Grant{Token: g.token, Validity: req.TTL}, nil
}

func (l *locker) Release(ctx context.Context, key string, owner driver.Owner) error {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.closed {
		return errClosed
	}
	g := t.grants[key]
	if g == nil || g.owner != owner {
		return fmt.Errorf("mem: %w", driver.ErrNotHeld)
	}
	t.removeLocked(key)
	if !t.now().Before(g.expires) {
		return fmt.Errorf("mem: grant expired: %w", driver.ErrNotHeld)
	}
	return nil
}

func (l *locker) Renew(ctx context.Context, batch []driver.Renewal) {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range batch {
		r := &batch[i]
		switch g := t.liveLocked(r.Key); {
		case l.closed:
			r.Err = errClosed
		case ctx.Err() != nil:
			r.Err = ctx.Err()
		case g == nil || g.owner != r.Owner:
			r.Err = fmt.Errorf("mem: %w", driver.ErrNotHeld)
		default:
			g.expires = t.now().Add(r.TTL)
			r.Validity = r.TTL
		}
	}
}

func (l *locker) Watch(key string, wake chan<- struct{}) (func(), error) {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.closed {
		return nil, errClosed
	}
	if t.watchers[key] == nil {
		t.watchers[key] = make(map[chan<- struct{}]struct{})
	}
	t.watchers[key][wake] = struct{}{}
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.watchers[key], wake)
		if len(t.watchers[key]) == 0 {
			delete(t.watchers, key)
		}
	}, nil
}

func (l *locker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.closed {
		return driver.Holder{}, false, errClosed
	}
	g := t.liveLocked(key)
	if g == nil {
		return driver.Holder{}, false, ctx.Err()
	}
	h := g.who
	h.Token = g.token
	return h, true, ctx.Err()
}

func (l *locker) Ping(ctx context.Context) error {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.closed {
		return errClosed
	}
	return ctx.Err()
}

// Close releases every grant this locker holds.
func (l *locker) Close() error {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	for key, owner := range l.held {
		if g := t.grants[key]; g != nil && g.owner == owner {
			t.removeLocked(key)
		}
	}
	return nil
}
