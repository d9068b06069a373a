package mem

import (
	"context"
	"fmt"

	"github.com/mutexkit/mutexkit/driver"
)

// locker is one client's view of a table. Its state is guarded by the
// table's mutex.
type locker struct {
	t      *Table
	held   map[string]driver.Owner // what Close releases
	closed bool
}

var _ driver.Locker = (*locker)(nil)

var (
	errClosed  = fmt.Errorf("mem: %w", driver.ErrClosed)
	errLocked  = fmt.Errorf("mem: %w", driver.ErrLocked)
	errKept    = fmt.Errorf("mem: kept for the next waiter: %w", driver.ErrLocked)
	errNotHeld = fmt.Errorf("mem: %w", driver.ErrNotHeld)
)

// Acquire grants key for req.TTL unless another owner holds an unexpired
// grant, or the key is kept for the head of its wait queue. A retry by the
// owner that holds it extends the grant to req.TTL from now, so the
// validity it returns, counted from the retry, holds. A refused attempt
// with req.Wait queues its owner, or keeps its place.
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
	expires := t.now().Add(req.TTL)
	if g := t.liveLocked(req.Key); g != nil {
		if g.owner != req.Owner {
			if req.Wait {
				t.waitLocked(req.Key, req.Owner, l)
			}
			return driver.Grant{}, errLocked
		}
		g.expires = expires // a retry of the attempt that made it
		return driver.Grant{Token: g.token, Validity: req.TTL}, nil
	}
	ranOut := t.removeLocked(req.Key) != nil // an expired grant
	head, passedOver := t.headLocked(req.Key)
	if head != nil && head.owner != req.Owner {
		if req.Wait {
			t.waitLocked(req.Key, req.Owner, l)
		}
		if ranOut || passedOver { // no release told the head
			t.handOnLocked(req.Key)
		}
		return driver.Grant{}, errKept
	}
	if head != nil {
		t.leaveLocked(req.Key, req.Owner)
	}
	t.tokens[req.Key]++
	t.grants[req.Key] = &grant{
		owner:   req.Owner,
		holder:  req.Holder,
		by:      l,
		expires: expires,
		token:   t.tokens[req.Key],
		onLost:  req.OnLost,
	}
	l.held[req.Key] = req.Owner
	return driver.Grant{Token: t.tokens[req.Key], Validity: req.TTL}, nil
}

// Release removes owner's grant on key and hands the key on. A grant that
// had expired is removed too, and reported with ErrNotHeld: another owner
// may have taken the key meanwhile. An owner that only waits for key
// leaves its queue (ErrNotHeld), passing the key on if it was kept for it.
func (l *locker) Release(ctx context.Context, key string, owner driver.Owner) error {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.closed {
		return errClosed
	}
	g := t.grants[key]
	if g == nil || g.owner != owner {
		if t.leaveLocked(key, owner) {
			t.handOnLocked(key)
		}
		return errNotHeld
	}
	t.removeLocked(key)
	t.handOnLocked(key)
	if !t.now().Before(g.expires) {
		return fmt.Errorf("mem: grant expired: %w", driver.ErrNotHeld)
	}
	return nil
}

// Renew extends each unexpired grant of the batch by its TTL: the table
// answers at once, so the validity is the whole TTL.
func (l *locker) Renew(ctx context.Context, batch []driver.Renewal) {
	if err := ctx.Err(); err != nil {
		for i := range batch {
			batch[i].Err = err
		}
		return
	}
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range batch {
		r := &batch[i]
		r.Validity, r.Err = 0, nil
		switch g := t.liveLocked(r.Key); {
		case l.closed:
			r.Err = errClosed
		case g == nil || g.owner != r.Owner:
			r.Err = errNotHeld
		default:
			g.expires = t.now().Add(r.TTL)
			r.Validity = r.TTL
		}
	}
}

// Watch wakes wake when key is handed on to owner: when its grant is
// removed (Release, Close, Table.Drop, Table.Expire) or the waiter it was
// kept for leaves, and owner heads its queue, or nobody queues. A grant or
// a place that runs out wakes no one until the next attempt on the key
// finds it: waiters' polling does.
func (l *locker) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.closed {
		return nil, errClosed
	}
	w := &watcher{owner: owner, wake: wake, by: l}
	if t.watchers[key] == nil {
		t.watchers[key] = make(map[*watcher]struct{})
	}
	t.watchers[key][w] = struct{}{}
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.watchers[key], w)
		if len(t.watchers[key]) == 0 {
			delete(t.watchers, key)
		}
	}, nil
}

// Inspect reports the unexpired grant on key and who asked for it.
func (l *locker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	if err := ctx.Err(); err != nil {
		return driver.Holder{}, false, err
	}
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.closed {
		return driver.Holder{}, false, errClosed
	}
	g := t.liveLocked(key)
	if g == nil {
		return driver.Holder{}, false, nil
	}
	h := g.holder
	h.Token = g.token
	return h, true, nil
}

// Ping reports only ErrClosed: a table is always reachable.
func (l *locker) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.closed {
		return errClosed
	}
	return nil
}

// Close removes every grant this Locker holds, its waiters' places and its
// watches, handing the keys on. A second Close returns nil.
func (l *locker) Close() error {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	for key, ws := range t.watchers { // first: what Close hands on wakes none of them
		for w := range ws {
			if w.by == l {
				delete(ws, w)
			}
		}
		if len(ws) == 0 {
			delete(t.watchers, key)
		}
	}
	for key, owner := range l.held {
		if g := t.grants[key]; g != nil && g.owner == owner {
			t.removeLocked(key)
			t.handOnLocked(key)
		}
	}
	t.leaveAllLocked(l)
	return nil
}
