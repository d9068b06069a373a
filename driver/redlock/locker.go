package redlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	mu     sync.Mutex
	held   map[string]heldKey // keys granted and not yet released, for Close

	watch watcher
	bg    sync.WaitGroup // late answers awaited after a call returned (gather.go)

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
	rec   any // the holder record written at the grant

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
	lock, _ := lockKeys(l.cfg.prefix, key)
	return heldKey{owner: owner, lock: lock, rec: owner.String()}, false
}

var errClosed = fmt.Errorf("redlock: %w", driver.ErrClosed)

// closeTimeout bounds the releases Close makes.
const closeTimeout = 5 * time.Second

func newLocker(cfg *config, nodes []*node) *locker {
	l := &locker{cfg: cfg, nodes: nodes, quorum: len(nodes)/2 + 1, held: make(map[string]heldKey)}
	l.watch.init(l)
	return l
}

// single reports whether l is a single-instance lock, which can fence.
func (l *locker) single() bool { return len(l.nodes) == 1 }

// Acquire asks every node at once for the key (node.acquire) and holds it
// if a quorum granted it within its validity. A failed attempt releases
// the key wherever it may have been taken.
func (l *locker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	start := time.Now() // validity counts from before the first send
	if l.closed.Load() {
		return driver.Grant{}, errClosed
	}
	ttlMs := req.TTL.Milliseconds() // the server's TTL: never longer than asked
	ttl := time.Duration(ttlMs) * time.Millisecond
	validity := ttl - l.cfg.drift(ttl)
	switch {
	case req.Key == "":
		return driver.Grant{}, fmt.Errorf("redlock: empty key: %w", driver.ErrInvalid)
	case ttlMs <= 0 || validity <= 0:
		return driver.Grant{}, fmt.Errorf("redlock: TTL %v leaves no validity after clock drift: %w", req.TTL, driver.ErrInvalid)
	case req.Fencing && !l.single():
		return driver.Grant{}, fmt.Errorf("redlock: fencing tokens over %d independent nodes: no counter they keep gives a total order (see docs/REDIS.md); use one node: %w", len(l.nodes), driver.ErrUnimplemented)
	}
	lock, fence := lockKeys(l.cfg.prefix, req.Key)
	rec := record(req.Owner, l.attempts.Add(1), req.Holder)
	grant := heldKey{owner: req.Owner, ttl: ttl, lock: lock, rec: rec}
	a := attempt{set: setCall(grant.lock, grant.rec, l.ttlArg(ttlMs))}
	if req.Fencing { // the counter only when a token is asked for: it costs Redis an INCR and a key
		a.fence = fence
	}
	timeout := l.cfg.ttlTimeout(ttl)

	if l.single() { // the hot path: one round trip, no goroutine
		token, _, err := l.nodes[0].acquire(ctx, timeout, a)
		switch {
		case err != nil:
			return driver.Grant{}, fmt.Errorf("redlock: acquire: %w", err)
		case token < 0:
			return driver.Grant{}, errHeld(1, 1)
		case token > 0:
			grant.rec = withToken(rec, token) // as the script stored it
		}
		if elapsed := time.Since(start); elapsed >= validity {
			l.releaseOn(ctx, timeout, []int{0}, grant, releaseScript) // a whole grant: waiters may take it
			return driver.Grant{}, errTooSlow(elapsed, validity)
		}
		l.track(req.Key, grant)
		return driver.Grant{Token: uint64(token), Validity: validity}, nil
	}

	type answer struct {
		token  int64
		holder []byte // the other owner, when token < 0
		err    error
	}
	var granted int
	g := gather(l, nil, func(_ int, n *node) answer {
		token, holder, err := n.acquire(ctx, timeout, a)
		return answer{token, holder, err}
	}, func(_ int, r answer) bool {
		if r.err == nil && r.token >= 0 {
			granted++
		}
		return granted >= l.quorum
	})
	elapsed := time.Since(start)
	won := granted >= l.quorum && elapsed < validity
	if !won {
		g.wait() // failed: every node's answer, so that all are released before a retry
	}
	granted = 0
	var held int
	var holders [][]byte // the other owners, one per node where one held the key
	var reached []int    // nodes that granted or may have: released if the attempt fails
	var errs []error
	for i, r := range g.out {
		if !g.answered[i] {
			continue
		}
		switch {
		case r.err != nil:
			reached = append(reached, i)
			errs = append(errs, r.err)
		case r.token < 0:
			held++
			holders = append(holders, r.holder)
		default:
			granted++
			reached = append(reached, i)
			if r.token != 0 {
				// A record of this owner's from a fenced grant on one node
				// (not a config Redlock takes): the nodes' records may
				// differ, so compare the owner alone.
				grant.rec = req.Owner.String()
			}
		}
	}
	if won {
		grant.settled = g.finish(l, nil) // a release waits for them (release)
		if grant.settled != nil {
			grant.late = make([]bool, len(l.nodes))
			for i, in := range g.answered {
				grant.late[i] = !in
			}
		}
		l.track(req.Key, grant)
		return driver.Grant{Validity: validity}, nil
	}
	if granted >= l.quorum { // a whole grant, too late: waiters may take it
		l.releaseOn(ctx, timeout, reached, grant, releaseScript)
		return driver.Grant{}, errTooSlow(elapsed, validity)
	}
	// Withdrawing wakes no waiter when one owner holds the key on a quorum
	// (or may, with the nodes that failed): only its release frees the
	// key. Otherwise the key is split between attempts, and each one's
	// withdrawal lets the others try again at once.
	withdraw := releaseScript
	if oneHolds(holders, len(errs), l.quorum) {
		withdraw = withdrawScript
	}
	l.releaseOn(ctx, timeout, reached, grant, withdraw)
	if len(errs) > len(l.nodes)-l.quorum { // no quorum is possible without them
		return driver.Grant{}, l.quorumError("acquire", errs)
	}
	return driver.Grant{}, errHeld(held, len(l.nodes))
}

// oneHolds reports whether one owner of holders (one entry per node that
// another owner held) holds a quorum, counting the unknown nodes as its.
func oneHolds(holders [][]byte, unknown, quorum int) bool {
	if unknown >= quorum {
		return true // nobody can win: waking them is no use
	}
	for i, h := range holders {
		n := unknown
		for _, o := range holders[i:] {
			if string(o) == string(h) {
				n++
			}
		}
		if n >= quorum {
			return true
		}
	}
	return false
}

func errHeld(held, n int) error {
	if n == 1 {
		return fmt.Errorf("redlock: %w", driver.ErrLocked)
	}
	return fmt.Errorf("redlock: held elsewhere on %d of %d nodes: %w", held, n, driver.ErrLocked)
}

func errTooSlow(elapsed, validity time.Duration) error {
	return fmt.Errorf("redlock: acquire took %v, longer than the grant's validity %v; released: %w", elapsed.Round(time.Millisecond), validity, driver.ErrUnavailable)
}

// nodesError says which nodes failed and why. It matches each node's
// error, driver.ErrUnavailable among them when a node was unreachable.
type nodesError struct {
	op     string
	failed int
	n      int
	quorum int
	errs   []error
}

func (e *nodesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redlock: %s: %d of %d nodes failed", e.op, e.failed, e.n)
	if e.n > 1 {
		fmt.Fprintf(&b, " (a quorum is %d)", e.quorum)
	}
	for i, err := range e.errs {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *nodesError) Unwrap() []error { return e.errs }

func (l *locker) quorumError(op string, errs []error) error {
	return &nodesError{op: op, failed: len(errs), n: len(l.nodes), quorum: l.quorum, errs: errs}
}

// releaseOn releases key on the given nodes with s (releaseScript, or
// withdrawScript, which wakes no waiter), for an attempt that failed. It
// runs even when ctx has ended: the attempt may have taken the key.
func (l *locker) releaseOn(ctx context.Context, timeout time.Duration, nodes []int, h heldKey, s *script) {
	if len(nodes) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	c := newCall(s, 2)
	c.args = append(c.args, h.lock, h.rec)
	var wg sync.WaitGroup
	for _, i := range nodes {
		wg.Go(func() { l.nodes[i].do(ctx, timeout, c) })
	}
	wg.Wait()
}

// releaseAll releases many keys with one pipelined round trip per node.
func (l *locker) releaseAll(ctx context.Context, held map[string]heldKey) []error {
	calls := make([]call, 0, len(held))
	for _, h := range held {
		c := newCall(releaseScript, 2)
		c.args = append(c.args, h.lock, h.rec)
		calls = append(calls, c)
	}
	perNode := make([][]result, len(l.nodes))
	var wg sync.WaitGroup
	for i, n := range l.nodes {
		wg.Go(func() { perNode[i] = n.pipeline(ctx, l.cfg.opTimeout(), calls) })
	}
	wg.Wait()
	var errs []error
	results := make([]result, len(l.nodes))
	for i := range calls {
		for j := range l.nodes {
			results[j] = perNode[j][i]
		}
		released, notHeld, nodeErrs := l.count(results, nil)
		if released < l.quorum && notHeld <= len(l.nodes)-l.quorum && len(nodeErrs) > 0 {
			errs = append(errs, l.quorumError("release", nodeErrs))
			break // one says it: the nodes are the same for every key
		}
	}
	return errs
}

func (l *locker) track(key string, h heldKey) {
	l.mu.Lock()
	if l.held != nil {
		l.held[key] = h
	}
	l.mu.Unlock()
}

func (l *locker) untrack(key string, owner driver.Owner) {
	l.mu.Lock()
	if l.held[key].owner == owner {
		delete(l.held, key)
	}
	l.mu.Unlock()
}

// Release deletes the key wherever owner holds it. It succeeds when a
// quorum released it, and returns driver.ErrNotHeld when too many nodes
// no longer had it for the lease to have been held.
func (l *locker) Release(ctx context.Context, key string, owner driver.Owner) error {
	if l.closed.Load() {
		return errClosed
	}
	// Each node's answer is bounded as for the acquire when this Locker
	// made the grant.
	h, mine := l.args(key, owner)
	timeout := l.cfg.opTimeout()
	if mine {
		timeout = l.cfg.ttlTimeout(h.ttl)
	}
	err := l.release(ctx, h, timeout)
	if err == nil || errors.Is(err, driver.ErrNotHeld) {
		l.untrack(key, owner)
	}
	return err
}

func (l *locker) release(ctx context.Context, h heldKey, timeout time.Duration) error {
	c := newCall(releaseScript, 2)
	c.args = append(c.args, h.lock, h.rec)
	if l.single() {
		reply, err := l.nodes[0].do(ctx, timeout, c)
		switch {
		case err != nil:
			return fmt.Errorf("redlock: release: %w", err)
		case reply == int64(1):
			return nil
		}
		return fmt.Errorf("redlock: %w", driver.ErrNotHeld)
	}
	// The calls outlive ctx: once the outcome is known (or ctx ends) the
	// late nodes are still asked, in the background, each bounded by its
	// timeout.
	callCtx := context.WithoutCancel(ctx)
	var released, notHeld int
	g := gather(l, ctx.Done(), func(i int, n *node) result {
		if h.late != nil && h.late[i] {
			<-h.settled // the node's acquire answer first (gather.go)
		}
		reply, err := n.do(callCtx, timeout, c)
		return result{reply: reply, err: err}
	}, func(_ int, r result) bool {
		switch {
		case r.err == nil && r.reply == int64(1):
			released++
		case r.err == nil && r.reply == int64(0):
			notHeld++
		}
		return released >= l.quorum || notHeld > len(l.nodes)-l.quorum
	})
	g.finish(l, nil)
	released, notHeld, errs := l.count(g.out, g.answered)
	switch {
	case released >= l.quorum:
		return nil
	case notHeld > len(l.nodes)-l.quorum:
		return fmt.Errorf("redlock: released on %d of %d nodes, gone from %d: %w", released, len(l.nodes), notHeld, driver.ErrNotHeld)
	case g.late > 0: // ctx ended first
		return fmt.Errorf("redlock: release: %w (it goes on in the background)", ctx.Err())
	}
	return l.quorumError("release", errs)
}

// count tallies replies of the release and extend scripts: 1 done, 0 not
// held. in marks the results that are in (nil: all).
func (l *locker) count(results []result, in []bool) (done, notHeld int, errs []error) {
	for i, r := range results {
		if in != nil && !in[i] {
			continue
		}
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case r.reply == int64(1):
			done++
		case r.reply == int64(0):
			notHeld++
		default:
			errs = append(errs, fmt.Errorf("redis %s: unexpected reply %v", l.nodes[i].name, r.reply))
		}
	}
	return done, notHeld, errs
}

// Renew extends every lease of batch with one pipelined round trip per
// node. A lease is renewed when a quorum extended it within its validity;
// it is lost (driver.ErrNotHeld) when so many nodes no longer have it that
// no quorum can.
func (l *locker) Renew(ctx context.Context, batch []driver.Renewal) {
	start := time.Now()
	if len(batch) == 0 {
		return
	}
	if l.closed.Load() {
		for i := range batch {
			batch[i].Err = errClosed
		}
		return
	}
	calls := make([]call, len(batch))
	minTTL := batch[0].TTL
	for i := range batch {
		r := &batch[i]
		h, _ := l.args(r.Key, r.Owner)
		calls[i] = newCall(extendScript, 3)
		calls[i].args = append(calls[i].args, h.lock, h.rec, l.ttlArg(r.TTL.Milliseconds()))
		minTTL = min(minTTL, r.TTL)
	}
	timeout := l.renewTimeout(ctx, minTTL, len(batch))
	perNode := make([][]result, len(l.nodes))
	var wg sync.WaitGroup
	for i, n := range l.nodes {
		wg.Go(func() { perNode[i] = n.pipeline(ctx, timeout, calls) })
	}
	wg.Wait()
	elapsed := time.Since(start)

	results := make([]result, len(l.nodes))
	for i := range batch {
		r := &batch[i]
		for j := range l.nodes {
			results[j] = perNode[j][i]
		}
		ttl := time.Duration(r.TTL.Milliseconds()) * time.Millisecond
		validity := ttl - l.cfg.drift(ttl)
		extended, notHeld, errs := l.count(results, nil)
		switch {
		case r.TTL.Milliseconds() <= 0 || validity <= 0:
			r.Err = fmt.Errorf("redlock: TTL %v leaves no validity after clock drift: %w", r.TTL, driver.ErrInvalid)
		case extended >= l.quorum && elapsed < validity:
			r.Validity, r.Err = validity, nil
		case extended >= l.quorum:
			r.Err = fmt.Errorf("redlock: renewal took %v, longer than the validity %v", elapsed.Round(time.Millisecond), validity)
		case notHeld > len(l.nodes)-l.quorum:
			r.Err = fmt.Errorf("redlock: lease gone from %d of %d nodes: %w", notHeld, len(l.nodes), driver.ErrNotHeld)
			l.untrack(r.Key, r.Owner)
		case len(errs) > 0:
			r.Err = l.quorumError("renew", errs)
		default: // extended on too few, gone from too few: cannot tell yet
			r.Err = fmt.Errorf("redlock: renew: extended on %d of %d nodes, gone from %d: no quorum either way", extended, len(l.nodes), notHeld)
		}
	}
}

// renewPerCall is what one more lease in a renewal batch may add to a
// node's answer: the node runs a script per lease, and the one client
// goroutine writes and reads them all.
const renewPerCall = 20 * time.Microsecond

// renewTimeout bounds each node's answer to a renewal of n leases of ttl:
// the acquire's bound, plus renewPerCall a lease, since thousands of
// leases take longer than one; but, once that exceeds the acquire's bound,
// at most half the time ctx leaves (the batch's loss deadline), so that a
// node that does not answer cannot hold the others' answers past it.
func (l *locker) renewTimeout(ctx context.Context, ttl time.Duration, n int) time.Duration {
	base := l.cfg.ttlTimeout(ttl)
	t := base + time.Duration(n)*renewPerCall
	if dl, ok := ctx.Deadline(); ok {
		t = min(t, max(time.Until(dl)/2, base))
	}
	return t
}

// Watch wakes wake when a release of key is published on any node.
func (l *locker) Watch(key string, wake chan<- struct{}) (func(), error) {
	if l.closed.Load() {
		return nil, errClosed
	}
	lock, _ := lockKeys(l.cfg.prefix, key)
	return l.watch.add(lock, wake)
}

// Inspect reads the holder record on every node. The key is held when a
// quorum has one owner; the record is that owner's.
func (l *locker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	if l.closed.Load() {
		return driver.Holder{}, false, errClosed
	}
	lock, _ := lockKeys(l.cfg.prefix, key)
	c := newCall(inspectScript, 1)
	c.args = append(c.args, lock)
	timeout := l.cfg.opTimeout()
	results := fanout(l, func(n *node) result {
		reply, err := n.do(ctx, timeout, c)
		return result{reply: reply, err: err}
	})
	type seen struct {
		owner  string
		count  int
		holder driver.Holder
	}
	var owners []seen
	var errs []error
	for i, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		if r.reply == nil {
			continue
		}
		v, ok := r.reply.([]byte)
		if !ok {
			errs = append(errs, fmt.Errorf("redis %s: unexpected reply %T to inspect", l.nodes[i].name, r.reply))
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
	results := fanout(l, func(n *node) result { return result{err: n.ping(ctx, timeout)} })
	var errs []error
	for _, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	if len(errs) > 0 {
		return l.quorumError("ping", errs)
	}
	return nil
}

// ping sends PING and CONFIG GET maxmemory-policy in one round trip; once
// more on a fresh connection if the server had closed it (idle.go).
func (n *node) ping(ctx context.Context, timeout time.Duration) error {
	timeout, ok := timeoutFor(ctx, timeout)
	if !ok {
		return n.fail(ctx, context.DeadlineExceeded)
	}
	deadline := time.Now().Add(timeout)
	policy, err := n.pingOnce(ctx, deadline, false)
	if peerClosed(err) {
		policy, err = n.pingOnce(ctx, deadline, true)
	}
	if err != nil {
		return n.fail(ctx, err)
	}
	if evicts(policy) {
		return fmt.Errorf("redis %s: maxmemory-policy is %s: under memory pressure the server may evict lock keys, silently freeing held locks; set it to noeviction", n.name, policy)
	}
	return nil
}

// pingOnce is one try of ping, on the pipe or a connection of the pool (a
// new one if fresh). It returns the policy, "" when the server refused
// CONFIG (ACLs, managed services): a server is not failed for that.
func (n *node) pingOnce(ctx context.Context, deadline time.Time, fresh bool) (string, error) {
	var out [2]result
	cmds := []pcmd{{"PING", nil}, {"CONFIG", []any{"GET", "maxmemory-policy"}}}
	if n.pipe != nil {
		n.pipe.doAll(ctx, deadline, cmds, out[:])
	} else {
		get := n.get
		if fresh {
			get = n.fresh
		}
		conn, err := get(ctx, time.Until(deadline))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		for _, c := range cmds {
			conn.Send(c.cmd, c.args...)
		}
		if err := conn.Flush(); err != nil {
			return "", err
		}
		for i := range out {
			out[i].reply, out[i].err = receive(conn, max(time.Until(deadline), time.Millisecond))
			if out[i].err != nil && !isReplyError(out[i].err) {
				return "", out[i].err
			}
		}
	}
	switch {
	case out[0].err != nil:
		return "", out[0].err
	case out[1].err != nil && isReplyError(out[1].err):
		return "", nil
	case out[1].err != nil:
		return "", out[1].err
	}
	if kv, ok := out[1].reply.([]any); ok && len(kv) == 2 {
		policy, _ := kv[1].([]byte)
		return string(policy), nil
	}
	return "", nil
}

// evicts reports whether a maxmemory-policy may evict keys that have a
// TTL, as every lock key has.
func evicts(policy string) bool {
	return strings.HasPrefix(policy, "allkeys-") || strings.HasPrefix(policy, "volatile-")
}

// Close releases the keys this Locker holds, stops the subscriptions and
// closes the pools the driver made (never an application's).
func (l *locker) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	l.watch.stop()
	l.mu.Lock()
	held := l.held
	l.held = nil // no more background work (background)
	l.mu.Unlock()
	l.bg.Wait() // late answers, each bounded by its node timeout
	var errs []error
	if len(held) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		errs = l.releaseAll(ctx, held)
		cancel()
	}
	for _, n := range l.nodes {
		if n.pipe != nil {
			n.pipe.close()
		}
		if n.own {
			n.pool.Close()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("redlock: close: %w", err)
	}
	return nil
}
