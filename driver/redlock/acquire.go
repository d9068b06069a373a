package redlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
)

// acquisition is one acquire attempt under way.
type acquisition struct {
	key      string
	owner    driver.Owner
	cmds     attempt
	grant    heldKey       // what the Locker keeps if the attempt wins
	start    time.Time     // before the first send: validity counts from here
	validity time.Duration // the grant's, from start
	timeout  time.Duration // each node's answer
	wait     *waiting      // the owner's wait, for a waiting attempt
}

// Acquire asks every node at once for the key (node.acquire) and holds it
// if a quorum granted it within its validity. A failed attempt releases
// the key wherever it may have been taken.
func (l *locker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	l.calls.RLock()
	defer l.calls.RUnlock()
	if l.closed.Load() {
		return driver.Grant{}, errClosed
	}
	g, err := l.acquire(ctx, req)
	if err == nil && l.closed.Load() {
		// Granted as the Locker closed: the grant is tracked, and Close,
		// which waits for this call, releases it.
		return driver.Grant{}, errClosed
	}
	return g, err
}

// acquire is Acquire on a Locker not closed yet.
func (l *locker) acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	start := time.Now()
	ttl, validity := l.cfg.validity(req.TTL)
	switch {
	case validity <= 0:
		return driver.Grant{}, errNoValidity(req.TTL)
	case req.Fencing && !l.single():
		return driver.Grant{}, fmt.Errorf("redlock: fencing tokens over %d independent nodes: no counter they keep gives a total order (see docs/REDIS.md); use one node: %w", len(l.nodes), driver.ErrUnimplemented)
	}
	if l.list() {
		return l.acquireList(ctx, req, start, ttl, validity)
	}
	var w *waiting
	if req.Wait {
		var send bool
		w, send = l.waits.ask(req.Key, req.Owner, l.watch.ensure() && l.watch.healthy(l.quorum) && !l.cfg.sendAll)
		if !send { // queued, and not woken since: nothing changed for it (queue.go)
			return driver.Grant{}, errLocked
		}
	}
	ks := keysOf(l.cfg.prefix, req.Key)
	q := acquisition{
		key:      req.Key,
		owner:    req.Owner,
		grant:    heldKey{owner: req.Owner, ttl: ttl, lock: ks.lock, queue: ks.queue, dls: ks.deadlines, rec: record(req.Owner, l.attempts.Add(1), req.Holder)},
		start:    start,
		validity: validity,
		timeout:  l.cfg.ttlTimeout(ttl),
		wait:     w,
	}
	ttlArg := l.ttlArg(ttl.Milliseconds())
	q.cmds.set = setCall(q.grant.lock, q.grant.rec, ttlArg)
	q.cmds.acks = l.cfg.acks.within(validity)
	if req.Fencing { // the counter only when a token is asked for: it costs Redis an INCR and a key
		q.cmds.fence = ks.fence
	}
	if w != nil {
		q.cmds.wait = l.waitCall(&q, ks.fence, ttlArg, req.Fencing)
	}
	var g driver.Grant
	var err error
	if l.single() {
		g, err = l.acquireOne(ctx, &q)
	} else {
		g, err = l.acquireQuorum(ctx, &q)
	}
	if w != nil && (errors.Is(err, driver.ErrDenied) || errors.Is(err, driver.ErrInvalid)) {
		l.waits.leave(req.Owner) // package mutex gives up on these without a Release
	}
	return g, err
}

// acquireOne is Acquire on one node, the hot path: one round trip, no
// goroutine.
func (l *locker) acquireOne(ctx context.Context, q *acquisition) (driver.Grant, error) {
	token, _, err := l.nodes[0].acquire(ctx, q.timeout, q.cmds)
	if token > 0 {
		q.grant.rec = withToken(q.grant.rec.(string), token) // as the script stored it
	}
	switch {
	case errors.Is(err, ErrNotReplicated): // granted on the master alone: a failover would lose it
		l.again(q)
		l.giveBack(ctx, q, []int{0})
		return driver.Grant{}, fmt.Errorf("redlock: acquire: %w; given back", err)
	case err != nil:
		l.again(q)
		return driver.Grant{}, fmt.Errorf("redlock: acquire: %w", err)
	case token < 0:
		return driver.Grant{}, errLocked
	}
	if elapsed := time.Since(q.start); elapsed >= q.validity {
		l.again(q)
		l.giveBack(ctx, q, []int{0})
		return driver.Grant{}, errTooSlow(elapsed, q.validity)
	}
	l.granted(q)
	return driver.Grant{Token: uint64(token), Validity: q.validity}, nil
}

// acquireQuorum is Acquire on N nodes (Redlock): it returns once a quorum
// granted, leaving the other answers to the background (gather.go), or,
// failing, once every node answered and those it reached were released.
func (l *locker) acquireQuorum(ctx context.Context, q *acquisition) (driver.Grant, error) {
	cmds, timeout := q.cmds, q.timeout
	var granted int
	g := gather(l, nil, func(_ int, n *node) answer {
		token, holder, err := n.acquire(ctx, timeout, cmds)
		return answer{token, holder, err}
	}, func(_ int, r answer) bool {
		if r.err == nil && r.token >= 0 {
			granted++
		}
		return granted >= l.quorum
	})
	elapsed := time.Since(q.start)
	won := granted >= l.quorum && elapsed < q.validity
	if !won {
		g.wait() // failed: every node's answer, so that all are released before a retry
		if granted < l.quorum && l.exorcise(ctx, q, g.out, granted) {
			granted = 0
			for _, r := range g.out {
				if r.err == nil && r.token >= 0 {
					granted++
				}
			}
			elapsed = time.Since(q.start)
			won = granted >= l.quorum && elapsed < q.validity
		}
	}
	granted = 0
	var held int
	var reached []int // nodes that granted or may have: released if the attempt fails
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
		default:
			granted++
			reached = append(reached, i)
			if r.token != 0 {
				// A record of this owner's from a fenced grant on one node
				// (not a config Redlock takes): the nodes' records may
				// differ, so compare the owner alone.
				q.grant.rec = q.owner.String()
			}
		}
	}
	if won {
		q.grant.settled = g.finish(l, nil) // a release waits for them (release)
		if q.grant.settled != nil {
			q.grant.late = make([]bool, len(l.nodes))
			for i, in := range g.answered {
				q.grant.late[i] = !in
			}
		}
		l.granted(q)
		return driver.Grant{Validity: q.validity}, nil
	}
	if len(reached) > 0 { // not a clean refusal: the nodes it reached may keep the key for it
		l.again(q)
	}
	if granted >= l.quorum { // a whole grant, too late
		l.giveBack(ctx, q, reached)
		return driver.Grant{}, errTooSlow(elapsed, q.validity)
	}
	// Withdrawn, the partial grants wake nobody who gains nothing by it: a
	// waiting attempt keeps its place and the key is kept for the head
	// (withdrawScript).
	l.releaseOn(ctx, timeout, reached, l.withdrawCall(q))
	if held > len(l.nodes)-l.quorum { // no quorum is left for this owner, whatever the failed nodes said
		return driver.Grant{}, errHeld(held, len(l.nodes))
	}
	// The nodes that failed decided: had they granted, the attempt would
	// have won. The key is not known to be held, and the error says the
	// nodes are unreachable (Lock waits it out; TryLock says so).
	e := l.quorumError("acquire", errs)
	e.held = held
	return driver.Grant{}, e
}

// answer is one node's answer to an acquire.
type answer struct {
	token  int64
	holder []byte // the other owner, when token < 0
	err    error
}

// attempt is one acquire's commands: the plain SET, the counter's key
// when the grant is fenced, and a waiting attempt's script.
type attempt struct {
	set   call   // SET lock record NX PX ttl GET
	fence string // "" unfenced
	wait  call   // waitScript; s nil unless waiting
	acks  replicaAcks
}

// waitCall is the waitScript call of waiting attempt q.
func (l *locker) waitCall(q *acquisition, fence string, ttlArg any, fenced bool) call {
	c := newCall(waitScript, 11)
	flag := "0"
	if fenced {
		flag = "1"
	}
	c.args = append(c.args, q.grant.lock, q.grant.queue, q.grant.dls, fence,
		q.grant.rec, ttlArg, q.wait.member, q.wait.stamp, queueHoldMs, l.wakeArg, flag)
	return c
}

// withdrawCall is the withdrawScript call taking back q's partial grants:
// a waiting attempt's keeps its place in the queue.
func (l *locker) withdrawCall(q *acquisition) call {
	c := newCall(withdrawScript, 8)
	var member, stamp any = "", 0
	if q.wait != nil {
		member, stamp = q.wait.member, q.wait.stamp
	}
	c.args = append(c.args, q.grant.lock, q.grant.queue, q.grant.dls, q.grant.rec, member, stamp, queueHoldMs, l.wakeArg)
	return c
}

// granted records q's grant: the Locker holds the key, and the owner's
// wait is over.
func (l *locker) granted(q *acquisition) {
	if q.wait != nil {
		q.grant.member = l.waits.granted(q.owner, q.wait, l.single())
	}
	l.track(q.key, q.grant)
}

// again makes the next attempt of q's waiter reach the server, after an
// attempt that failed otherwise than by every node's refusal (queue.go).
func (l *locker) again(q *acquisition) {
	if q.wait != nil {
		l.waits.again(q.wait)
	}
}

// giveBack takes back a whole grant that came too late on the given
// nodes: a waiting attempt keeps its place (and the key is kept for the
// head, most likely itself); any other hands the key to the head.
func (l *locker) giveBack(ctx context.Context, q *acquisition, nodes []int) {
	if q.wait != nil {
		l.releaseOn(ctx, q.timeout, nodes, l.withdrawCall(q))
		return
	}
	l.releaseOn(ctx, q.timeout, nodes, l.releaseCall(q.grant, ""))
}

// setCall returns the plain acquire, SET NX PX with GET: the server
// answers nil when it set the key, else the value there.
func setCall(lock, rec, ttlMs any) call {
	return call{cmd: "SET", args: []any{lock, rec, "NX", "PX", ttlMs, "GET"}}
}

// acquire asks n for a grant of a and returns its token (0 unfenced), or
// -1 when another owner holds the key, with that owner when the reply
// says (the fenced script does not: nil). With replica acknowledgements
// asked (a.acks), a grant the replicas did not acknowledge returns its
// token and an error matching ErrNotReplicated: the caller gives it back.
//
// An unfenced grant is the one SET where the server takes NX with GET
// (Redis 7.0 on): nil means granted, another owner's record held. The
// caller's own record, left by an earlier attempt of the same owner, goes
// on to the acquire script, which writes it again with this attempt's
// record and TTL. A fenced grant, and any grant from a server that
// refuses NX with GET, is the script alone. (The script costs Redis three
// to four times a SET.)
func (n *node) acquire(ctx context.Context, timeout time.Duration, a attempt) (token int64, holder []byte, err error) {
	lock, rec, ttl := a.set.args[0], a.set.args[1], a.set.args[4]
	if a.wait.s != nil {
		return n.acquireBy(ctx, timeout, a.wait, a.acks)
	}
	if a.fence == "" && !n.noSetGet.Load() {
		reply, err, unacked := n.send(ctx, timeout, a.set, a.acks)
		switch cur, isValue := reply.([]byte); {
		case err == nil && reply == nil:
			return 0, nil, unacked
		case err == nil && !isValue:
			return 0, nil, fmt.Errorf("redis %s: unexpected reply %T to SET", n.name, reply)
		case err == nil && !sameOwner(cur, rec.(string)):
			return -1, ownerOf(cur), nil
		case err == nil: // our own grant: the script refreshes it
		case refusesSetGet(err):
			n.noSetGet.Store(true)
		default:
			return 0, nil, err
		}
	}
	var c call
	if a.fence != "" {
		c = newCall(fencedAcquireScript, 4)
		c.args = append(c.args, lock, a.fence, rec, ttl)
	} else {
		c = newCall(acquireScript, 3)
		c.args = append(c.args, lock, rec, ttl)
	}
	return n.acquireBy(ctx, timeout, c, a.acks)
}

// acquireBy runs an acquire script: its reply is a token, or the value
// that keeps the caller out.
func (n *node) acquireBy(ctx context.Context, timeout time.Duration, c call, acks replicaAcks) (token int64, holder []byte, err error) {
	reply, err, unacked := n.send(ctx, timeout, c, acks)
	if err != nil {
		return 0, nil, err
	}
	switch v := reply.(type) {
	case int64:
		return v, nil, unacked
	case []byte: // another owner's record
		return -1, ownerOf(v), nil
	}
	return 0, nil, fmt.Errorf("redis %s: unexpected reply %T to acquire", n.name, reply)
}

// send runs c on n, followed by WAIT when acks are asked; unacked is nil
// unless they were and the replicas did not acknowledge c's writes.
func (n *node) send(ctx context.Context, timeout time.Duration, c call, acks replicaAcks) (reply any, err, unacked error) {
	if !acks.on() {
		reply, err = n.do(ctx, timeout, c)
		return reply, err, nil
	}
	return n.doAcked(ctx, timeout, c, acks)
}

// ownerOf returns the owner of a holder record: its first 32 bytes.
func ownerOf(rec []byte) []byte { return rec[:min(len(rec), ownerLen)] }

// sameOwner reports whether a lock's value is a record of rec's owner.
func sameOwner(cur []byte, rec string) bool {
	return len(cur) >= ownerLen && len(rec) >= ownerLen && string(cur[:ownerLen]) == rec[:ownerLen]
}

// refusesSetGet reports a server's refusal of SET with both NX and GET
// (before Redis 7.0: a syntax error).
func refusesSetGet(err error) bool {
	var e redis.Error
	return errors.As(err, &e) && strings.Contains(strings.ToLower(string(e)), "syntax error")
}
