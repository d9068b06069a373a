package mem

import (
	"slices"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// The wait queue (driver.AcquireRequest.Wait): per key, the owners waiting
// for it, oldest first. While a key has no grant and its queue a live head,
// the key is kept for that head alone; a release wakes only the head's
// Watch. Places run out driver.QueueHold after a waiter's last attempt, on
// the table's clock, and are then passed over: the table keeps no timer,
// so this is found by the next call that looks at the queue.

// waiting is one owner's place in a key's queue.
type waiting struct {
	owner driver.Owner
	by    *locker   // whose Close takes it out
	until time.Time // driver.QueueHold after its last attempt
}

// waitLocked puts owner at the tail of key's queue, or keeps its place
// there, for QueueHold from now. Callers hold mu.
func (t *Table) waitLocked(key string, owner driver.Owner, by *locker) {
	until := t.now().Add(driver.QueueHold)
	for _, w := range t.queues[key] {
		if w.owner == owner {
			w.until = until
			return
		}
	}
	t.queues[key] = append(t.queues[key], &waiting{owner: owner, by: by, until: until})
}

// headLocked returns the waiter key is kept for while it has no grant: the
// oldest whose place has not run out. It drops the places that ran out, and
// reports whether the head it returns is new for that. Callers hold mu.
func (t *Table) headLocked(key string) (head *waiting, passedOver bool) {
	if len(t.queues) == 0 { // nobody waits for any key: no lookup
		return nil, false
	}
	q := t.queues[key]
	if len(q) == 0 {
		return nil, false
	}
	first, now := q[0], t.now()
	q = slices.DeleteFunc(q, func(w *waiting) bool { return !now.Before(w.until) })
	t.setQueueLocked(key, q)
	if len(q) == 0 {
		return nil, false
	}
	return q[0], q[0] != first
}

// leaveLocked takes owner out of key's queue, and reports whether the key
// is to be handed on: owner was its live head (places that ran out in
// front of it are dropped first), or dropping them made a head no release
// told. Callers hold mu.
func (t *Table) leaveLocked(key string, owner driver.Owner) (handOn bool) {
	head, passedOver := t.headLocked(key)
	if head == nil {
		return false
	}
	q := t.queues[key]
	if i := slices.IndexFunc(q, func(w *waiting) bool { return w.owner == owner }); i >= 0 {
		t.setQueueLocked(key, slices.Delete(q, i, i+1))
	}
	return head.owner == owner || passedOver
}

// leaveAllLocked takes l's waiters out of every queue (l is closing), and
// hands on each key whose live head it took, or whose head is new for
// places that ran out. Callers hold mu.
func (t *Table) leaveAllLocked(l *locker) {
	for key := range t.queues {
		head, passedOver := t.headLocked(key)
		if head == nil {
			continue
		}
		t.setQueueLocked(key, slices.DeleteFunc(t.queues[key], func(w *waiting) bool { return w.by == l }))
		if head.by == l || passedOver {
			t.handOnLocked(key)
		}
	}
}

func (t *Table) setQueueLocked(key string, q []*waiting) {
	if len(q) == 0 {
		delete(t.queues, key)
		return
	}
	t.queues[key] = q
}

// handOnLocked wakes whoever may take key now, if it has no grant: the head
// of its queue alone, or, when nobody queues, every watcher. Callers hold
// mu.
func (t *Table) handOnLocked(key string) {
	if len(t.watchers[key]) == 0 { // nobody to wake: the common release
		return
	}
	if t.liveLocked(key) != nil {
		return
	}
	head, _ := t.headLocked(key)
	for w := range t.watchers[key] {
		if head != nil && w.owner != head.owner {
			continue
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}
