package postgres

import (
	"fmt"

	"github.com/mutexkit/mutexkit/driver"
)

// Wake-ups: a release reaches a waiter only through its wait in the
// server (see wait.go), so Watch registers channels per waiting owner, and
// the wait wakes them when the key is kept for the owner, or the wait
// ended. No NOTIFY, no LISTEN connection.

type watchKey struct {
	key   string
	owner driver.Owner
}

type watchReg struct{ c chan<- struct{} }

// wakeLocked wakes the watches of k. The caller holds l.mu.
func (l *locker) wakeLocked(k watchKey) {
	for r := range l.watches[k] {
		select {
		case r.c <- struct{}{}:
		default:
		}
	}
}

// Watch wakes owner when key is kept for it, or its wait ends: only an
// owner that waits in the server (an attempt with Wait found the key held)
// can be woken, once per grant, so one release wakes one waiter. For any
// other owner it returns driver.ErrUnimplemented: this driver sees another
// client's release only by waiting in the server.
func (l *locker) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosedLock
	}
	h := l.held[key]
	if h == nil || h.owner != owner || h.w == nil {
		return nil, fmt.Errorf("postgres: only an owner waiting in the server can be woken: %w", driver.ErrUnimplemented)
	}
	k := watchKey{key, owner}
	r := &watchReg{c: wake}
	if l.watches[k] == nil {
		l.watches[k] = make(map[*watchReg]struct{})
	}
	l.watches[k][r] = struct{}{}
	if h.w.kept {
		l.wakeLocked(k)
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.watches[k], r)
		if len(l.watches[k]) == 0 {
			delete(l.watches, k)
		}
	}, nil
}
