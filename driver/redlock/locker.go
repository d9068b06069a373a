package redlock

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// locker is one client's connection to one node or to N Redlock nodes.
type locker struct {
	cfg    *config
	nodes  []*node
	quorum int

	closed atomic.Bool
	// calls is held for reading by each Acquire: Close takes it to wait
	// for the acquires under way, whose grants it then releases with the
	// rest (a grant made as the Locker closed would otherwise hold its key
	// until its TTL, the transports being closed).
	calls  sync.RWMutex
	mu     sync.Mutex
	held   map[string]heldKey        // keys granted and not yet released, for Close
	ghosts map[ghost]<-chan struct{} // owners released before every node answered (ghosts.go)

	waits   waiters // owners waiting in a key's queue (queue.go)
	watch   watcher
	wakeArg any            // the wake channels' prefix, <prefix>:wake:, boxed once
	bg      sync.WaitGroup // late answers awaited after a call returned (gather.go)

	lastTTL  atomic.Pointer[boxedTTL] // the last TTL argument, boxed
	attempts atomic.Uint64            // acquire attempts made: each record's attempt number
}

// boxedTTL is a TTL argument kept boxed: a client's leases mostly share
// one TTL, and boxing it again would allocate on every call.
type boxedTTL struct {
	ms  int64
	arg any
}

// ttlArg returns ms as a script argument, reusing the last one.
func (l *locker) ttlArg(ms int64) any {
	if b := l.lastTTL.Load(); b != nil && b.ms == ms {
		return b.arg
	}
	b := &boxedTTL{ms: ms, arg: ms}
	l.lastTTL.Store(b)
	return b.arg
}

var _ driver.Locker = (*locker)(nil)

// heldKey is a grant this Locker made: its owner; its TTL, which bounds
// the node timeout of its release; and its script arguments, boxed, which
// its renewals and release use again rather than build and box anew.
type heldKey struct {
	owner driver.Owner
	ttl   time.Duration
	lock  any // the lock key
	queue any // its queue's keys (keys.go)
	dls   any
	rec   any // the holder record written at the grant

	// member is the owner's queue member when the grant ended its wait
	// (nil if not): its release takes it out of the queues of the nodes
	// that refused the grant (Redlock) and so still have it, or of a node
	// that may have run one of its attempts late (waiters.granted). nil
	// lets a release with nobody queued skip the queue (releaseScript).
	member any

	// The list protocol's (list.go): the grant's member and lease key
	// (strings, boxed once; nil unless the list's), and whether the lease
	// lasts at most QueueHold (its release leaves it to expire rather than
	// delete it).
	lmember, lease any
	short          bool

	// late marks the nodes that had not answered the acquire when it
	// returned; settled is closed once they all have (nil: none late).
	late    []bool
	settled chan struct{}
}

// args returns the lock key and owner arguments of owner's grant of key:
// those of the grant when this Locker made it, else built afresh (the
// scripts compare the owner's 32 hex digits alone).
func (l *locker) args(key string, owner driver.Owner) (h heldKey, ok bool) {
	l.mu.Lock()
	h, ok = l.held[key]
	l.mu.Unlock()
	if ok && h.owner == owner {
		return h, true
	}
	ks := keysOf(l.cfg.prefix, key)
	return heldKey{owner: owner, lock: ks.lock, queue: ks.queue, dls: ks.deadlines, rec: owner.String()}, false
}

// closeTimeout bounds the releases Close makes.
const closeTimeout = 5 * time.Second

func newLocker(cfg *config, nodes []*node) *locker {
	l := &locker{cfg: cfg, nodes: nodes, quorum: len(nodes)/2 + 1, held: make(map[string]heldKey), ghosts: make(map[ghost]<-chan struct{})}
	l.waits.init()
	wake := cfg.prefix + ":wake:"
	l.wakeArg = wake
	l.watch.init(l, wake+l.waits.id)
	return l
}

// single reports whether l is a single-instance lock, which can fence.
func (l *locker) single() bool { return len(l.nodes) == 1 }

// track records h, a grant of key; false when the Locker is closing (its
// Close would not release h).
func (l *locker) track(key string, h heldKey) {
	l.mu.Lock()
	l.held[key] = h // not nil: Close waits for every Acquire (calls)
	l.mu.Unlock()
}

func (l *locker) untrack(key string, owner driver.Owner) {
	l.mu.Lock()
	if l.held[key].owner == owner {
		delete(l.held, key)
	}
	l.mu.Unlock()
}

// Watch wakes wake when owner's next attempt on key may succeed: when a
// node keeps the key for owner, the head of its queue (queue.go), or a
// subscription was confirmed again.
func (l *locker) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	if l.closed.Load() {
		return nil, errClosed
	}
	if !l.watch.ensure() {
		return nil, errNoSubscription
	}
	stop, ok := l.waits.watch(key, owner, wake)
	if !ok {
		return nil, errKeyPolled
	}
	return stop, nil
}

// Inspect reads the holder record on every node. The key is held when a
// quorum has one owner; the record is that owner's. A key kept for a
// waiter is held by nobody.
func (l *locker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	if l.closed.Load() {
		return driver.Holder{}, false, errClosed
	}
	if l.list() {
		return l.inspectList(ctx, key)
	}
	lock, _ := lockKeys(l.cfg.prefix, key)
	c := newCall(inspectScript, 1)
	c.args = append(c.args, lock)
	timeout := l.cfg.opTimeout()
	results := fanout(l, func(n *node) result {
		reply, err := n.do(ctx, timeout, c)
		return result{Reply: reply, Err: err}
	})
	type seen struct {
		owner  string
		count  int
		holder driver.Holder
	}
	var owners []seen
	var errs []error
	for i, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err)
			continue
		}
		if r.Reply == nil {
			continue
		}
		v, ok := r.Reply.([]byte)
		if !ok {
			errs = append(errs, fmt.Errorf("redis %s: unexpected reply %T to inspect", l.nodes[i].name, r.Reply))
			continue
		}
		if kept(v) { // kept for a waiter: held by nobody
			continue
		}
		owner, holder := parseRecord(string(v))
		found := false
		for k := range owners {
			if owners[k].owner == owner {
				owners[k].count++
				found = true
			}
		}
		if !found {
			owners = append(owners, seen{owner: owner, count: 1, holder: holder})
		}
	}
	best := 0
	for _, o := range owners {
		if o.count >= l.quorum {
			return o.holder, true, nil
		}
		best = max(best, o.count)
	}
	if len(errs) > 0 && best+len(errs) >= l.quorum {
		return driver.Holder{}, false, l.quorumError("inspect", errs)
	}
	return driver.Holder{}, false, nil
}

// Ping reaches every node and checks that it cannot evict lock keys. It
// fails if any node is unreachable or unfit, naming each, even though
// Redlock keeps working while a quorum is fine: a readiness check that
// must tolerate a minority down can test errors.Is(err,
// driver.ErrUnavailable) and count.
func (l *locker) Ping(ctx context.Context) error {
	if l.closed.Load() {
		return errClosed
	}
	timeout := l.cfg.opTimeout()
	var errs []error
	for _, err := range fanout(l, func(n *node) error { return n.ping(ctx, timeout) }) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return l.quorumError("ping", errs)
	}
	return nil
}

// Close releases the keys this Locker holds, takes its waiters out of the
// queues (passing on a key kept for one), stops the subscriptions and
// closes the pools the driver made (never an application's).
func (l *locker) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	// The acquires under way end first (each bounded by its node
	// timeouts); those that come later wait for Close, then find the
	// Locker closed.
	l.calls.Lock()
	defer l.calls.Unlock()
	l.watch.stop()
	waits := l.waits.close()
	l.mu.Lock()
	held := l.held
	l.held = nil // no more background work (background)
	l.mu.Unlock()
	l.bg.Wait() // late answers, each bounded by its node timeout
	var err error
	if len(held) > 0 || len(waits) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		err = l.releaseAll(ctx, held, waits)
		cancel()
	}
	for _, n := range l.nodes {
		n.t.close()
	}
	if err != nil {
		return fmt.Errorf("redlock: close: %w", err)
	}
	return nil
}
