package redlock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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

	args atomic.Pointer[boxedArgs] // the last acquire's constant arguments
}

// boxedArgs are acquire arguments that rarely change between calls (a
// client's host, pid and TTL), kept boxed so the hot path does not
// allocate them again.
type boxedArgs struct {
	host    string
	pid     int
	ttlMs   int64
	hostArg any
	pidArg  any
	ttlArg  any
}

// boxed returns the boxed host, pid and TTL, reusing the last ones.
func (l *locker) boxed(host string, pid int, ttlMs int64) (hostArg, pidArg, ttlArg any) {
	if b := l.args.Load(); b != nil && b.host == host && b.pid == pid && b.ttlMs == ttlMs {
		return b.hostArg, b.pidArg, b.ttlArg
	}
	b := &boxedArgs{host: host, pid: pid, ttlMs: ttlMs, hostArg: host, pidArg: pid, ttlArg: ttlMs}
	l.args.Store(b)
	return b.hostArg, b.pidArg, b.ttlArg
}

var _ driver.Locker = (*locker)(nil)

// heldKey is a grant this Locker made: its owner, and its TTL, which
// bounds the node timeout of its release.
type heldKey struct {
	owner driver.Owner
	ttl   time.Duration
}

var errClosed = fmt.Errorf("redlock: %w", driver.ErrClosed)

// closeTimeout bounds the releases Close makes.
const closeTimeout = 5 * time.Second

func newLocker(cfg *config, nodes []*node) *locker {
	l := &locker{cfg: cfg, nodes: nodes, quorum: len(nodes)/2 + 1, held: make(map[string]heldKey)}
	l.watch.init(l)
	return l
}

// single reports whether l is a single-instance lock, which fences.
func (l *locker) single() bool { return len(l.nodes) == 1 }

// fanout runs fn on every node, in parallel, and waits for all: each call
// is bounded by its node timeout.
func (l *locker) fanout(fn func(n *node) result) []result {
	out := make([]result, len(l.nodes))
	var wg sync.WaitGroup
	for i := 1; i < len(l.nodes); i++ {
		wg.Go(func() { out[i] = fn(l.nodes[i]) })
	}
	out[0] = fn(l.nodes[0])
	wg.Wait()
	return out
}

// Acquire runs the acquire script on every node at once and holds the key
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
	lock, holder := lockKeys(l.cfg.prefix, req.Key)
	fence := "0"
	if l.single() {
		fence = "1" // a single node always fences: the counter costs one INCR
	}
	var since int64
	if !req.Holder.Since.IsZero() {
		since = req.Holder.Since.UnixMilli()
	}
	host, pid, ttlArg := l.boxed(req.Holder.Host, req.Holder.PID, ttlMs)
	c := newCall(acquireScript, 9)
	c.args = append(c.args, lock, holder, fenceKey(lock), req.Owner.String(), ttlArg, fence, host, pid, since)
	timeout := l.cfg.ttlTimeout(ttl)

	if l.single() { // the hot path: one round trip, no goroutine
		reply, err := l.nodes[0].do(ctx, timeout, c)
		if err != nil {
			return driver.Grant{}, fmt.Errorf("redlock: acquire: %w", err)
		}
		token, ok := reply.(int64)
		switch {
		case !ok:
			return driver.Grant{}, fmt.Errorf("redlock: acquire: unexpected reply %T from %s", reply, l.nodes[0].name)
		case token < 0:
			return driver.Grant{}, errHeld(1, 1)
		}
		if elapsed := time.Since(start); elapsed >= validity {
			l.releaseOn(ctx, timeout, []int{0}, lock, holder, req.Owner)
			return driver.Grant{}, errTooSlow(elapsed, validity)
		}
		l.track(req.Key, req.Owner, ttl)
		return driver.Grant{Token: uint64(token), Validity: validity}, nil
	}

	results := l.fanout(func(n *node) result {
		reply, err := n.do(ctx, timeout, c)
		return result{reply: reply, err: err}
	})
	var granted, held int
	var reached []int // nodes that granted or may have: released if the attempt fails
	var errs []error
	for i, r := range results {
		token, ok := r.reply.(int64)
		switch {
		case r.err != nil:
			reached = append(reached, i)
			errs = append(errs, r.err)
		case !ok:
			reached = append(reached, i)
			errs = append(errs, fmt.Errorf("redis %s: unexpected reply %T", l.nodes[i].name, r.reply))
		case token < 0:
			held++
		default:
			granted++
			reached = append(reached, i)
		}
	}
	if granted >= l.quorum {
		if elapsed := time.Since(start); elapsed < validity {
			l.track(req.Key, req.Owner, ttl)
			return driver.Grant{Validity: validity}, nil
		} else {
			l.releaseOn(ctx, timeout, reached, lock, holder, req.Owner)
			return driver.Grant{}, errTooSlow(elapsed, validity)
		}
	}
	l.releaseOn(ctx, timeout, reached, lock, holder, req.Owner)
	if len(errs) > len(l.nodes)-l.quorum { // no quorum is possible without them
		return driver.Grant{}, l.quorumError("acquire", errs)
	}
	return driver.Grant{}, errHeld(held, len(l.nodes))
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

// releaseOn releases key on the given nodes, for an attempt that failed.
// It runs even when ctx has ended: the attempt may have taken the key.
func (l *locker) releaseOn(ctx context.Context, timeout time.Duration, nodes []int, lock, holder string, owner driver.Owner) {
	if len(nodes) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	c := newCall(releaseScript, 3)
	c.args = append(c.args, lock, holder, owner.String())
	var wg sync.WaitGroup
	for _, i := range nodes {
		wg.Go(func() { l.nodes[i].do(ctx, timeout, c) })
	}
	wg.Wait()
}

// releaseAll releases many keys with one pipelined round trip per node.
func (l *locker) releaseAll(ctx context.Context, held map[string]heldKey) []error {
	calls := make([]call, 0, len(held))
	for key, h := range held {
		lock, holder := lockKeys(l.cfg.prefix, key)
		c := newCall(releaseScript, 3)
		c.args = append(c.args, lock, holder, h.owner.String())
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
		released, notHeld, nodeErrs := l.count(results)
		if released < l.quorum && notHeld <= len(l.nodes)-l.quorum && len(nodeErrs) > 0 {
			errs = append(errs, l.quorumError("release", nodeErrs))
			break // one says it: the nodes are the same for every key
		}
	}
	return errs
}

func (l *locker) track(key string, owner driver.Owner, ttl time.Duration) {
	l.mu.Lock()
	if l.held != nil {
		l.held[key] = heldKey{owner, ttl}
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

// releaseTimeout bounds each node's answer to a release of key: as for
// its acquire when this Locker made the grant.
func (l *locker) releaseTimeout(key string, owner driver.Owner) time.Duration {
	l.mu.Lock()
	h, ok := l.held[key]
	l.mu.Unlock()
	if ok && h.owner == owner {
		return l.cfg.ttlTimeout(h.ttl)
	}
	return l.cfg.opTimeout()
}

// Release deletes the key wherever owner holds it. It succeeds when a
// quorum released it, and returns driver.ErrNotHeld when too many nodes
// no longer had it for the lease to have been held.
func (l *locker) Release(ctx context.Context, key string, owner driver.Owner) error {
	if l.closed.Load() {
		return errClosed
	}
	err := l.release(ctx, key, owner, l.releaseTimeout(key, owner))
	if err == nil || errors.Is(err, driver.ErrNotHeld) {
		l.untrack(key, owner)
	}
	return err
}

func (l *locker) release(ctx context.Context, key string, owner driver.Owner, timeout time.Duration) error {
	lock, holder := lockKeys(l.cfg.prefix, key)
	c := newCall(releaseScript, 3)
	c.args = append(c.args, lock, holder, owner.String())
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
	results := l.fanout(func(n *node) result {
		reply, err := n.do(ctx, timeout, c)
		return result{reply: reply, err: err}
	})
	released, notHeld, errs := l.count(results)
	switch {
	case released >= l.quorum:
		return nil
	case notHeld > len(l.nodes)-l.quorum:
		return fmt.Errorf("redlock: released on %d of %d nodes, gone from %d: %w", released, len(l.nodes), notHeld, driver.ErrNotHeld)
	}
	return l.quorumError("release", errs)
}

// count tallies replies of the release and extend scripts: 1 done, 0 not
// held.
func (l *locker) count(results []result) (done, notHeld int, errs []error) {
	for i, r := range results {
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
		lock, holder := lockKeys(l.cfg.prefix, r.Key)
		calls[i] = newCall(extendScript, 4)
		calls[i].args = append(calls[i].args, lock, holder, r.Owner.String(), r.TTL.Milliseconds())
		minTTL = min(minTTL, r.TTL)
	}
	timeout := l.cfg.ttlTimeout(minTTL)
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
		extended, notHeld, errs := l.count(results)
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

// Watch wakes wake when a release of key is published on any node.
func (l *locker) Watch(key string, wake chan<- struct{}) (func(), error) {
	if l.closed.Load() {
		return nil, errClosed
	}
	lock, _ := lockKeys(l.cfg.prefix, key)
	return l.watch.add(lock, wake)
}

// Inspect reads the owner and holder record on every node. The key is
// held when a quorum has one owner; the holder record is that owner's.
func (l *locker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	if l.closed.Load() {
		return driver.Holder{}, false, errClosed
	}
	lock, holder := lockKeys(l.cfg.prefix, key)
	c := newCall(inspectScript, 2)
	c.args = append(c.args, lock, holder)
	timeout := l.cfg.opTimeout()
	results := l.fanout(func(n *node) result {
		reply, err := n.do(ctx, timeout, c)
		return result{reply: reply, err: err}
	})
	type seen struct {
		owner  string
		count  int
		fields []any
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
		parts, ok := r.reply.([]any)
		owner, ok2 := first(parts).([]byte)
		if !ok || !ok2 || len(parts) != 2 {
			errs = append(errs, fmt.Errorf("redis %s: unexpected reply to inspect", l.nodes[i].name))
			continue
		}
		fields, _ := parts[1].([]any)
		found := false
		for k := range owners {
			if owners[k].owner == string(owner) {
				owners[k].count++
				found = true
			}
		}
		if !found {
			owners = append(owners, seen{owner: string(owner), count: 1, fields: fields})
		}
	}
	best := 0
	for _, o := range owners {
		if o.count >= l.quorum {
			return parseHolder(o.fields), true, nil
		}
		best = max(best, o.count)
	}
	if len(errs) > 0 && best+len(errs) >= l.quorum {
		return driver.Holder{}, false, l.quorumError("inspect", errs)
	}
	return driver.Holder{}, false, nil
}

func first(s []any) any {
	if len(s) == 0 {
		return nil
	}
	return s[0]
}

// parseHolder reads the holder hash, field by field; unknown fields are
// left zero.
func parseHolder(fields []any) driver.Holder {
	var h driver.Holder
	for i := 0; i+1 < len(fields); i += 2 {
		name, _ := fields[i].([]byte)
		value, _ := fields[i+1].([]byte)
		switch string(name) {
		case "token":
			h.Token, _ = strconv.ParseUint(string(value), 10, 64)
		case "host":
			h.Host = string(value)
		case "pid":
			h.PID, _ = strconv.Atoi(string(value))
		case "since":
			if ms, err := strconv.ParseInt(string(value), 10, 64); err == nil && ms > 0 {
				h.Since = time.UnixMilli(ms)
			}
		}
	}
	return h
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
	results := l.fanout(func(n *node) result { return result{err: n.ping(ctx, timeout)} })
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

// ping sends PING and CONFIG GET maxmemory-policy in one round trip. A
// server that refuses CONFIG (ACLs, managed services) is not failed for it.
func (n *node) ping(ctx context.Context, timeout time.Duration) error {
	timeout, ok := timeoutFor(ctx, timeout)
	if !ok {
		return n.fail(ctx, context.DeadlineExceeded)
	}
	var reply any
	var err error
	if n.pipe != nil {
		var out [2]result
		n.pipe.doAll(ctx, time.Now().Add(timeout), []pcmd{{"PING", nil}, {"CONFIG", []any{"GET", "maxmemory-policy"}}}, out[:])
		if out[0].err != nil {
			return n.fail(ctx, out[0].err)
		}
		reply, err = out[1].reply, out[1].err
	} else {
		conn, gerr := n.get(ctx, timeout) // not err: the reply's error below is the outer one
		if gerr != nil {
			return n.fail(ctx, gerr)
		}
		defer conn.Close()
		conn.Send("PING")
		conn.Send("CONFIG", "GET", "maxmemory-policy")
		if err := conn.Flush(); err != nil {
			return n.fail(ctx, err)
		}
		if _, err := receive(conn, timeout); err != nil {
			return n.fail(ctx, err)
		}
		reply, err = receive(conn, timeout)
	}
	if err != nil {
		if isReplyError(err) {
			return nil
		}
		return n.fail(ctx, err)
	}
	if kv, ok := reply.([]any); ok && len(kv) == 2 {
		policy, _ := kv[1].([]byte)
		if evicts(string(policy)) {
			return fmt.Errorf("redis %s: maxmemory-policy is %s: under memory pressure the server may evict lock keys, silently freeing held locks; set it to noeviction", n.name, policy)
		}
	}
	return nil
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
	l.held = nil
	l.mu.Unlock()
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
