package redlock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/pipeline"
)

// The list protocol: one Redis server's lock and wait queue in one list,
// so that a handoff costs the server five commands and no script.
//
// The lock key <prefix>:{K'} is a list of members in arrival order; its
// head holds the key. A member is the owner's 32 hex digits, the Locker's
// client id (16 hex digits) and a number of the Locker's (hex), new for
// each enqueue. Each member has a lease key, <lock key>:l:<member>,
// holding its holder record (value.go) and expiring: a member whose lease
// key is gone is dead.
//
//   - Lock: SET lease PX QueueHold NX, then RPUSH member, in one round
//     trip. RPUSH answering 1 means the member is the head: granted.
//     Otherwise the waiter is queued. While it waits its Locker refreshes
//     the lease and finds its place (listRefreshScript) at least every
//     refreshEvery, which also shows a head whose wake-up was lost. Lease
//     writes never shorten a lease: a copy a client resent after a
//     timeout may run after the grant's renewal.
//   - Unlock: LREM the member (every copy), then LINDEX 0, in one round trip; then
//     PUBLISH the new head's member on its client's channel. A woken
//     waiter asks the server nothing: it holds the key.
//   - TryLock, renewals and the rarer paths (dead heads, a fenced grant,
//     a Locker that knows the owner alone) run scripts.
//
// Exclusion rests on three rules:
//
//  1. A member leaves the list only by an LREM of its owner's (its
//     Locker's, after which that Locker never uses the member again, or
//     another Locker's release by owner), or when it is the head and its
//     lease key is gone (listLua's first, in a script). Nothing is ever
//     put before a member. So a member that is the head stays the head
//     until its owner removes it or its lease expires.
//  2. A member's Locker counts its hold from the sending of its last lease
//     write that succeeded: the lease key outlives that by its PX, less
//     the drift, and until then (1) keeps the member in place. A renewal
//     extends the lease and checks, in one script, that the member heads
//     the list (an operator's DEL of the list leaves the lease key).
//  3. A wake-up names the member, published by the Unlock that made it the
//     head: an earlier member's, arriving late, is ignored, and each
//     enqueue makes a new member.
//
// A waiter's lease lasts QueueHold, so a dead waiter is passed over soon
// after it comes to the head (driver.QueueHold): the waiter behind it, its
// place unchanged over two refreshes, drops it. A grant's lease is
// extended to its TTL by its first renewal (a TryLock's and a fenced
// grant's have it at once), so a grant may first last QueueHold rather
// than its TTL if its holder dies before renewing. A member that leaves
// by Unlock leaves its lease key to expire (at most QueueHold) unless it
// was extended.
//
// The list has no TTL (its members' leases have one): a key whose last
// members all died keeps them until the next TryLock or Lock on it drops
// them.
//
// On a Redis Cluster a Locker keeps the sorted-set queue (queue.go): the
// list's scripts read other members' lease keys, which they cannot name
// in KEYS, and while a slot migrates key by key a lease already moved
// would look gone to a script run on the source.

// listLua is the scripts' common Lua. KEYS[1] is the list.
const listLua = `
local function leaseOf(m) return KEYS[1] .. ':l:' .. m end
local function first()
  local popped = false
  while true do
    local h = redis.call('LINDEX', KEYS[1], 0)
    if not h or redis.call('EXISTS', leaseOf(h)) == 1 then return h, popped end
    redis.call('LPOP', KEYS[1])
    popped = true
  end
end
local function wake(prefix, h)
  redis.call('PUBLISH', prefix .. string.sub(h, 33, 48), h)
end
local function withToken(rec, token)
  return string.sub(rec, 1, 33) .. token .. string.sub(rec, 35)
end
`

// listTryScript is a TryLock: it grants the key when the list has no live
// member (dropping the dead heads, and waking a live waiter that comes to
// the head by it), or recognises the owner's own grant (a retried
// attempt), rewriting its record with this attempt's and its TTL.
//
// KEYS: list, lease. ARGV: member, record (token 0), ttl ms, "1" to
// fence, wake channel prefix. Returns the token when it granted the key
// to the member, {token, member} when it recognised the owner's grant to
// an earlier attempt's member, else the head.
// The fencing counter, <list>:fence, is not among KEYS: Redis refuses a
// call of more than ten words from a client that has not authenticated
// (a protocol error, where a shorter one gets NOAUTH).
var listTryScript = newScript(2, listLua+`
local h, popped = first()
if h then
  if string.sub(h, 1, 32) ~= string.sub(ARGV[2], 1, 32) then
    if popped then wake(ARGV[5], h) end
    return h
  end
  local lk = leaseOf(h)
  local token = string.match(redis.call('GET', lk) or '', '^%x+ (%d+)') or '0'
  redis.call('SET', lk, withToken(ARGV[2], token), 'PX', ARGV[3])
  return {tonumber(token), h}
end
local token = '0'
if ARGV[4] == '1' then token = string.format('%d', redis.call('INCR', KEYS[1] .. ':fence')) end
redis.call('SET', KEYS[2], withToken(ARGV[2], token), 'PX', ARGV[3])
redis.call('RPUSH', KEYS[1], ARGV[1])
return tonumber(token)
`)

// listFenceScript fences the grant of a member at the head: it bumps the
// key's counter and writes the token into the lease, with the grant's TTL.
//
// KEYS: list, lease, fence. ARGV: member, record (token 0), ttl ms.
// Returns the token, or -1 when the member is not the head or is dead.
var listFenceScript = newScript(3, listLua+`
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local token = string.format('%d', redis.call('INCR', KEYS[3]))
redis.call('SET', KEYS[2], withToken(ARGV[2], token), 'PX', ARGV[3])
return tonumber(token)
`)

// listRefreshScript is a waiter's refresh: it extends the member's lease
// to the hold, never shortening it (a copy of it that a client resent
// after a timeout, go-redis's MaxRetries, may run after the grant's
// renewal made the lease longer), and finds the member's place.
//
// KEYS: list, lease. ARGV: member, hold ms. Returns the place (0: the
// head), -1 when the lease is gone (the place is lost, or will be), -2
// when the member is not in the list (it was deleted).
var listRefreshScript = newScript(2, `
local t = redis.call('PTTL', KEYS[2])
if t == -2 then return -1 end
if t >= 0 and t < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
local pos = redis.call('LPOS', KEYS[1], ARGV[1])
if not pos then return -2 end
return pos
`)

// listReapScript drops the dead heads and wakes the live member that comes
// to the head by it, unless it is the caller.
//
// KEYS: list. ARGV: wake channel prefix, the caller's member. Returns the
// head, or nil.
var listReapScript = newScript(1, listLua+`
local h, popped = first()
if h and popped and h ~= ARGV[2] then wake(ARGV[1], h) end
return h
`)

// listReleaseOwnerScript releases owner's grant, and drops its waiting
// members, for a Locker that did not make the grant (it knows the owner
// alone); it wakes the new head. It must not race that owner's own Lock
// on another Locker (package mutex never does): a waiter woken there
// holds the key without asking the server, and would go on holding it.
//
// KEYS: list. ARGV: owner (32 hex digits), wake channel prefix. Returns 1
// when the owner held the key, else 0.
var listReleaseOwnerScript = newScript(1, listLua+`
local h0 = redis.call('LINDEX', KEYS[1], 0)
local released = 0
if h0 and string.sub(h0, 1, 32) == ARGV[1] and redis.call('EXISTS', leaseOf(h0)) == 1 then released = 1 end
for _, m in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(m, 1, 32) == ARGV[1] then
    redis.call('LREM', KEYS[1], 0, m)
    redis.call('DEL', leaseOf(m))
  end
end
local h = first()
if h and h ~= h0 then wake(ARGV[2], h) end
return released
`)

// listRenewScript extends a grant's lease: the member's, if it heads the
// list, or, for a Locker that did not make the grant (it knows the owner
// alone), the head's if the owner's. Its check of the head is what a
// plain PEXPIRE lacks: a list deleted behind the holder's back (an
// operator's DEL) leaves the lease key.
//
// KEYS: list. ARGV: owner, member ("" if unknown), ttl ms. Returns 1 if
// extended, 0 if not held.
var listRenewScript = newScript(1, listLua+`
local h = redis.call('LINDEX', KEYS[1], 0)
if not h or (ARGV[2] ~= '' and h ~= ARGV[2]) or string.sub(h, 1, 32) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', leaseOf(h), ARGV[3])
`)

// listInspectScript reads the head's holder record: nil when the list is
// empty or its head is dead.
//
// KEYS: list.
var listInspectScript = newScript(1, listLua+`
local h = redis.call('LINDEX', KEYS[1], 0)
if not h then return false end
return redis.call('GET', leaseOf(h))
`)

// list reports whether l runs the list protocol: one server, not a Redis
// Cluster.
func (l *locker) list() bool {
	return l.cfg.listQueue && len(l.nodes) == 1 && l.watch.shards == nil
}

// write runs calls that write the caller's own state (its lease, its
// place) in one round trip. With replica acknowledgements asked
// (WithReplicaAcks), WAIT follows on the same connection, bounded by
// within, and unacked says why the replicas did not acknowledge the
// writes (nil when they did). A lost release needs no acknowledgement:
// it only keeps the member a little longer.
func (l *locker) write(ctx context.Context, timeout time.Duration, calls []call, within time.Duration) (out []result, unacked error) {
	if !l.cfg.acks.on() {
		return l.nodes[0].pipeline(ctx, timeout, calls), nil
	}
	out, un := l.nodes[0].pipelineAcked(ctx, timeout, calls, l.cfg.acks.within(within))
	for _, e := range un {
		if e != nil {
			return out, e
		}
	}
	return out, nil
}

// writeOne is write for one call, without a pipeline's slices (the hot
// path: TryLock).
func (l *locker) writeOne(ctx context.Context, timeout time.Duration, c call, within time.Duration) (reply any, err, unacked error) {
	if !l.cfg.acks.on() {
		reply, err = l.nodes[0].do(ctx, timeout, c)
		return reply, err, nil
	}
	return l.nodes[0].doAcked(ctx, timeout, c, l.cfg.acks.within(within))
}

// giveBack takes member, granted with writes the replicas did not
// acknowledge, out of the list, and wakes the new head.
func (l *locker) giveBackList(ctx context.Context, timeout time.Duration, lock, member, lease string) {
	out := l.nodes[0].pipeline(context.WithoutCancel(ctx), timeout, []call{
		{cmd: "LREM", args: []any{lock, 0, member}},
		{cmd: "DEL", args: []any{lease}},
		{cmd: "LINDEX", args: []any{lock, 0}},
	})
	if head, _ := out[2].Reply.([]byte); out[2].Err == nil {
		l.wakeHead(ctx, timeout, head)
	}
}

// holdMs is a waiter's lease, driver.QueueHold, as the server takes it.
var holdMs any = driver.QueueHold.Milliseconds()

// leaseKey returns member's lease key.
func leaseKey(lock, member string) string { return lock + ":l:" + member }

// newLease returns the lease key of a new member of owner's in lock's
// list, and the member: one string, the member its tail.
func (l *locker) newLease(lock string, owner driver.Owner) (lease, member string) {
	var b strings.Builder
	b.Grow(len(lock) + len(":l:") + ownerLen + len(l.waits.id) + 16)
	b.WriteString(lock)
	lease, member = l.finishLease(&b, owner)
	return lease, member
}

// newLeaseOf is newLease for key's lock, made in the same string: the
// lock key its head.
func (l *locker) newLeaseOf(key string, owner driver.Owner) (lock, lease, member string) {
	var b strings.Builder
	b.Grow(2*len(l.cfg.prefix) + len(key) + len(":{}:l:") + ownerLen + len(l.waits.id) + 16)
	writeLockKey(&b, l.cfg.prefix, key)
	n := b.Len()
	lease, member = l.finishLease(&b, owner)
	return lease[:n], lease, member
}

// finishLease writes ":l:" and a new member of owner's after the lock key
// in b, and returns the lease key and the member.
func (l *locker) finishLease(b *strings.Builder, owner driver.Owner) (lease, member string) {
	b.WriteString(":l:")
	n := b.Len()
	writeOwnerHex(b, owner)
	b.WriteString(l.waits.id)
	var num [16]byte
	b.Write(strconv.AppendUint(num[:0], l.attempts.Add(1), 16))
	lease = b.String()
	return lease, lease[n:]
}

// acquireList is Acquire by the list protocol.
func (l *locker) acquireList(ctx context.Context, req driver.AcquireRequest, start time.Time, ttl, validity time.Duration) (driver.Grant, error) {
	if !req.Wait {
		return l.tryList(ctx, req, start, ttl, validity)
	}
	w, send := l.waits.ask(req.Key, req.Owner, l.watch.ensure() && l.watch.healthy(1) && !l.cfg.sendAll)
	if !send {
		return driver.Grant{}, errLocked
	}
	ks := keysOf(l.cfg.prefix, req.Key)
	g := heldKey{owner: req.Owner, ttl: ttl, lock: ks.lock, rec: record(req.Owner, l.attempts.Add(1), req.Holder)}
	// A waiter's calls keep a lease of QueueHold: bounded as an acquire of
	// that would be.
	timeout := l.cfg.ttlTimeout(min(ttl, driver.QueueHold))
	st, unanswered := l.waits.listState(w)
	var gr driver.Grant
	var err error
	switch {
	case st.member == "" || unanswered:
		gr, err = l.enqueue(ctx, req, w, st, unanswered, g, ks.fence, start, timeout, validity)
	case st.head:
		gr, err = l.grantHead(ctx, req, w, st, g, ks.fence, start, timeout, validity)
	default:
		gr, err = l.refresh(ctx, req, w, st, g, ks.fence, start, timeout, validity)
	}
	if errors.Is(err, driver.ErrDenied) || errors.Is(err, driver.ErrInvalid) {
		l.waits.leave(req.Owner) // package mutex gives up on these without a Release
	}
	return gr, err
}

// tryList is a TryLock by the list protocol: listTryScript.
func (l *locker) tryList(ctx context.Context, req driver.AcquireRequest, start time.Time, ttl, validity time.Duration) (driver.Grant, error) {
	lock, lease, m := l.newLeaseOf(req.Key, req.Owner)
	// Each boxed once, for the script and the release.
	g := heldKey{owner: req.Owner, ttl: ttl, lock: lock, rec: record(req.Owner, l.attempts.Add(1), req.Holder), lmember: m, lease: lease}
	timeout := l.cfg.ttlTimeout(ttl)
	flag := "0"
	if req.Fencing {
		flag = "1"
	}
	c := newCall(listTryScript, 7)
	c.args = append(c.args, g.lock, g.lease, g.lmember, g.rec, l.ttlArg(g.ttl.Milliseconds()), flag, l.wakeArg)
	reply, err, unacked := l.writeOne(ctx, timeout, c, validity)
	if err != nil {
		return driver.Grant{}, acquireErr(err)
	}
	token, granted := reply.(int64)
	switch v := reply.(type) {
	case []byte: // the head: held
		return driver.Grant{}, errLocked
	case []any: // the owner's grant to an earlier attempt
		var member []byte
		if len(v) == 2 {
			token, _ = v[0].(int64)
			member, _ = v[1].([]byte)
		}
		if len(member) == 0 {
			return driver.Grant{}, fmt.Errorf("redis %s: unexpected reply to acquire", l.nodes[0].name)
		}
		g.lmember, g.lease = string(member), leaseKey(lock, string(member))
		granted = true
	}
	if !granted {
		return driver.Grant{}, fmt.Errorf("redis %s: unexpected reply %T to acquire", l.nodes[0].name, reply)
	}
	if token != 0 {
		g.rec = withToken(g.rec.(string), token)
	}
	g.short = g.ttl <= driver.QueueHold
	if err := l.keep(ctx, req.Key, g, start, validity, timeout, unacked); err != nil {
		return driver.Grant{}, err
	}
	return driver.Grant{Token: uint64(token), Validity: validity}, nil
}

// keep makes g, granted with validity counted from start, the Locker's,
// or gives it back: when its writes were not acknowledged (unacked), or
// when it came too late.
func (l *locker) keep(ctx context.Context, key string, g heldKey, start time.Time, validity, timeout time.Duration, unacked error) error {
	var err error
	if elapsed := time.Since(start); unacked != nil {
		err = fmt.Errorf("redlock: acquire: %w; given back", unacked)
	} else if elapsed >= validity {
		err = errTooSlow(elapsed, validity)
	}
	if err != nil {
		l.giveBackList(ctx, timeout, g.lock.(string), g.lmember.(string), g.lease.(string))
		return err
	}
	l.track(key, g)
	return nil
}

// enqueue puts the owner's new member at the tail of the list, first
// taking out, when old, the member of an attempt that went unanswered
// or lost its lease (st.member,
// which the server may or may not have, and a write of which may yet
// run). RPUSH answering 1 grants the key.
func (l *locker) enqueue(ctx context.Context, req driver.AcquireRequest, w *waiting, st listWait, old bool, g heldKey, fence string, start time.Time, timeout, validity time.Duration) (driver.Grant, error) {
	lock := g.lock.(string)
	lease, m := l.newLease(lock, req.Owner)
	old = old && st.member != ""
	var calls []call
	if old {
		calls = append(calls,
			call{cmd: "LINDEX", args: []any{lock, 0}},
			call{cmd: "LREM", args: []any{lock, 0, st.member}},
			call{cmd: "DEL", args: []any{st.lease}})
	}
	calls = append(calls,
		// NX: a copy resent after a timeout (go-redis's MaxRetries) must
		// not cut the lease of a grant renewed meanwhile.
		call{cmd: "SET", args: []any{lease, g.rec, "PX", holdMs, "NX"}},
		call{cmd: "RPUSH", args: []any{lock, m}})
	push := len(calls) - 1
	if old {
		calls = append(calls, call{cmd: "LINDEX", args: []any{lock, 0}})
	}
	l.waits.setMember(w, m, lease)
	_, hold := l.cfg.validity(driver.QueueHold)
	out, unacked := l.write(ctx, timeout, calls, hold)
	if err := firstErr(out); err != nil {
		l.waits.again(w)
		return driver.Grant{}, acquireErr(err)
	}
	if old { // the old member may have been the head: pass the key on
		// Whoever heads the list now was the head when LINDEX read it: a
		// wake-up is right whenever the head changed.
		before, _ := out[0].Reply.([]byte)
		if head, _ := out[len(out)-1].Reply.([]byte); string(before) != string(head) && string(head) != m {
			l.wakeHead(ctx, timeout, head)
		}
	}
	n, _ := out[push].Reply.(int64)
	if unacked != nil { // a failover could lose the place: the next attempt makes a new one
		l.waits.again(w)
		if n == 1 {
			l.giveBackList(ctx, timeout, lock, m, lease)
		}
		return driver.Grant{}, fmt.Errorf("redlock: acquire: %w", unacked)
	}
	l.waits.answered(w, start)
	if n == 1 {
		st, _ := l.waits.listState(w)
		return l.grantHead(ctx, req, w, st, g, fence, start, timeout, validity)
	}
	return driver.Grant{}, errLocked
}

// refresh extends the waiter's lease and finds its place
// (listRefreshScript): the waiter holds the key at the head. One whose
// place has not moved since its last refresh drops the dead heads
// (listReapScript): the next in line at every such refresh, the others
// at most once a QueueHold, so that a long hold does not make every
// waiter reap every second. A waiter whose
// lease is gone, or whose member is not in the list (it was deleted),
// enqueues again, and so does, at its next attempt, one whose refresh
// failed: a PEXPIRE of 3 s still on its way could otherwise land after
// the grant's renewal and shorten the lease under its holder.
func (l *locker) refresh(ctx context.Context, req driver.AcquireRequest, w *waiting, st listWait, g heldKey, fence string, start time.Time, timeout, validity time.Duration) (driver.Grant, error) {
	lock := g.lock.(string)
	_, hold := l.cfg.validity(driver.QueueHold)
	c := newCall(listRefreshScript, 4)
	c.args = append(c.args, lock, st.lease, st.member, holdMs)
	reply, err, unacked := l.writeOne(ctx, timeout, c, hold)
	if err != nil {
		l.waits.again(w)
		return driver.Grant{}, acquireErr(err)
	}
	if unacked != nil { // the hold counts from the last acknowledged write
		l.waits.retry(w)
		return driver.Grant{}, fmt.Errorf("redlock: acquire: %w", unacked)
	}
	pos, _ := reply.(int64)
	if pos < 0 { // the place is lost, or will be
		return l.enqueue(ctx, req, w, st, true, g, fence, start, timeout, validity)
	}
	l.waits.answered(w, start)
	if pos > 0 && l.waits.stalled(w, pos) {
		head, err := l.reap(ctx, lock, st.member, timeout)
		if err != nil {
			l.waits.retry(w)
			return driver.Grant{}, err
		}
		if string(head) == st.member {
			pos = 0
		}
	}
	if pos == 0 {
		st, _ := l.waits.listState(w)
		return l.grantHead(ctx, req, w, st, g, fence, start, timeout, validity)
	}
	return driver.Grant{}, errLocked
}

// reap runs listReapScript and returns the head. With replica
// acknowledgements asked, the replicas must have its drops before the
// caller counts on them.
func (l *locker) reap(ctx context.Context, lock, member string, timeout time.Duration) ([]byte, error) {
	c := newCall(listReapScript, 3)
	c.args = append(c.args, lock, l.wakeArg, member)
	_, hold := l.cfg.validity(driver.QueueHold)
	reply, err, unacked := l.writeOne(ctx, timeout, c, hold)
	if err != nil {
		return nil, acquireErr(err)
	}
	if unacked != nil {
		return nil, fmt.Errorf("redlock: acquire: %w", unacked)
	}
	head, _ := reply.([]byte)
	return head, nil
}

// grantHead turns the waiter's place at the head into its grant. Its
// validity counts from its last lease write (st.wrote). With a third of
// QueueHold or less of it left, or a fenced grant asked, it asks the
// server first (listRenewScript, listFenceScript), which checks that the
// member heads the list and extends its lease to the TTL.
func (l *locker) grantHead(ctx context.Context, req driver.AcquireRequest, w *waiting, st listWait, g heldKey, fence string, start time.Time, timeout, validity time.Duration) (driver.Grant, error) {
	_, hold := l.cfg.validity(driver.QueueHold)
	v := min(validity, st.wrote.Add(hold).Sub(start)) // from start
	g.lmember, g.lease, g.short = any(st.member), any(st.lease), true
	var token int64
	if req.Fencing || v-time.Since(start) < hold/3 {
		var c call
		if req.Fencing {
			c = newCall(listFenceScript, 6)
			c.args = append(c.args, g.lock, st.lease, fence, st.member, g.rec, l.ttlArg(g.ttl.Milliseconds()))
		} else {
			c = newCall(listRenewScript, 4)
			c.args = append(c.args, g.lock, req.Owner.String(), st.member, l.ttlArg(g.ttl.Milliseconds()))
		}
		r, err, unacked := l.writeOne(ctx, timeout, c, validity)
		if err != nil {
			l.waits.again(w) // the next attempt makes a new member
			return driver.Grant{}, acquireErr(err)
		}
		if unacked != nil {
			l.waits.retry(w)
			return driver.Grant{}, fmt.Errorf("redlock: acquire: %w", unacked)
		}
		reply, _ := r.(int64)
		if (req.Fencing && reply <= 0) || (!req.Fencing && reply != 1) {
			l.waits.again(w) // dropped meanwhile: the next attempt queues again
			return driver.Grant{}, errLocked
		}
		if req.Fencing {
			token, g.rec = reply, withToken(g.rec.(string), reply)
		}
		v, g.short = validity, g.ttl <= driver.QueueHold
	}
	l.waits.leave(req.Owner)
	if err := l.keep(ctx, req.Key, g, start, v, timeout, nil); err != nil {
		return driver.Grant{}, err
	}
	return driver.Grant{Token: uint64(token), Validity: v}, nil
}

// releaseList is Release by the list protocol. A grant whose lease
// lapsed while its member still heads the list (no waiter dropped it) is
// released as held: nobody else held the key meanwhile.
func (l *locker) releaseList(ctx context.Context, key string, owner driver.Owner, h heldKey, mine bool) error {
	timeout := l.cfg.opTimeout()
	if mine {
		timeout = l.cfg.ttlTimeout(h.ttl)
	}
	lock := h.lock.(string)
	st, waiting := l.waits.leaveList(owner)
	switch {
	case mine && h.lmember != nil:
		// Every copy: a client that sent its RPUSH twice (go-redis's
		// MaxRetries after a lost reply) queued the member twice.
		var b plainCmds
		b.add("LREM", h.lock, 0, h.lmember)
		if !h.short {
			b.add("DEL", h.lease)
		}
		head := b.add("LINDEX", h.lock, 0)
		out := b.run(ctx, l, timeout)
		if err := firstErr(out); err != nil {
			return notHeldErr("release", err)
		}
		if n, _ := out[0].Reply.(int64); n == 0 {
			return fmt.Errorf("redlock: %w", driver.ErrNotHeld)
		}
		next, _ := out[head].Reply.([]byte)
		l.wakeHead(ctx, timeout, next)
		return nil
	case waiting && st.member != "":
		out := l.nodes[0].pipeline(ctx, timeout, []call{
			{cmd: "LINDEX", args: []any{lock, 0}},
			{cmd: "LREM", args: []any{lock, 0, st.member}},
			{cmd: "DEL", args: []any{st.lease}},
			{cmd: "LINDEX", args: []any{lock, 0}},
		})
		if err := firstErr(out); err != nil {
			return notHeldErr("release", err)
		}
		// Whoever heads the list now was the head when LINDEX read it: a
		// wake-up is right whenever the head changed.
		before, _ := out[0].Reply.([]byte)
		if head, _ := out[3].Reply.([]byte); string(head) != string(before) {
			l.wakeHead(ctx, timeout, head)
		}
		return fmt.Errorf("redlock: %w", driver.ErrNotHeld)
	}
	c := newCall(listReleaseOwnerScript, 3)
	c.args = append(c.args, lock, owner.String(), l.wakeArg)
	reply, err := l.nodes[0].do(ctx, timeout, c)
	switch {
	case err != nil:
		return notHeldErr("release", err)
	case reply == int64(1):
		return nil
	}
	return fmt.Errorf("redlock: %w", driver.ErrNotHeld)
}

// wakeHead publishes head (a member, nil if none) on its client's
// channel. A wake-up that fails is not an error of the call that made
// it: the waiter finds it heads the list by its next refresh. It is sent
// even when the caller's ctx has ended, as the release it follows was.
func (l *locker) wakeHead(ctx context.Context, timeout time.Duration, head []byte) {
	if c, ok := l.wakeCall(head); ok {
		l.nodes[0].do(context.WithoutCancel(ctx), timeout, c)
	}
}

// wakeCall is the PUBLISH that wakes head, a member, on its client's
// channel. ok is false when head is nil or not a member.
func (l *locker) wakeCall(head []byte) (c call, ok bool) {
	if len(head) < ownerLen+16 {
		return call{}, false
	}
	return call{cmd: "PUBLISH", args: []any{l.wakeArg.(string) + string(head[ownerLen:ownerLen+16]), head}}, true
}

// acquireErr is an acquire's error. A key stored otherwise than as a
// list is refused as held: a client of the earlier layout (one string,
// scripts.go) holds it, and keeps it from this one as this one's list
// keeps it from that one (WRONGTYPE both ways).
func acquireErr(err error) error {
	var e redis.Error
	switch {
	case wrongType(err): // inside a script too
		return fmt.Errorf("redlock: the lock key holds a value of another layout (a client of an earlier version of this driver?): %w: %w", driver.ErrLocked, err)
	case errors.As(err, &e) && strings.Contains(strings.ToLower(string(e)), "unknown command"):
		return fmt.Errorf("redlock: acquire: one server's queue needs Redis 6.0.6 or later (LPOS): %w", err)
	}
	return fmt.Errorf("redlock: acquire: %w", err)
}

// notHeldErr is the error of op (a release, a renewal): on a key stored
// otherwise than as a list (a client of the earlier layout holds it),
// driver.ErrNotHeld.
func notHeldErr(op string, err error) error {
	if wrongType(err) {
		return fmt.Errorf("redlock: %s: the lock key holds a value of another layout: %w: %w", op, driver.ErrNotHeld, err)
	}
	return fmt.Errorf("redlock: %s: %w", op, err)
}

func firstErr(out []result) error {
	for _, r := range out {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

// renewList is Renew by the list protocol: listRenewScript for each
// lease, one round trip for the batch.
func (l *locker) renewList(ctx context.Context, batch []driver.Renewal, start time.Time) {
	calls := make([]call, 0, len(batch))
	sent := make([]int, 0, len(batch))
	var minTTL, maxValidity time.Duration
	for i := range batch {
		r := &batch[i]
		ttl, validity := l.cfg.validity(r.TTL)
		if validity <= 0 {
			r.Err = errNoValidity(r.TTL)
			continue
		}
		maxValidity = max(maxValidity, validity)
		h, mine := l.args(r.Key, r.Owner)
		if !mine || h.lmember == nil {
			h.lmember = "" // the owner alone: the script finds its member
		}
		c := newCall(listRenewScript, 4)
		c.args = append(c.args, h.lock, r.Owner.String(), h.lmember, l.ttlArg(ttl.Milliseconds()))
		calls = append(calls, c)
		if mine && ttl > driver.QueueHold {
			l.lengthened(r.Key, r.Owner) // as sent: its outcome may stay unknown
		}
		sent = append(sent, i)
		if minTTL == 0 || ttl < minTTL {
			minTTL = ttl
		}
	}
	if len(calls) == 0 {
		return
	}
	var out []result
	var unacked []error
	if timeout := l.renewTimeout(ctx, minTTL, len(calls)); l.cfg.acks.on() {
		out, unacked = l.nodes[0].pipelineAcked(ctx, timeout, calls, l.cfg.acks.within(maxValidity))
	} else {
		out = l.nodes[0].pipeline(ctx, timeout, calls)
	}
	elapsed := time.Since(start)
	for k, res := range out {
		r := &batch[sent[k]]
		_, validity := l.cfg.validity(r.TTL)
		switch {
		case res.Err != nil:
			r.Err = notHeldErr("renew", res.Err)
		case res.Reply != int64(1):
			r.Err = fmt.Errorf("redlock: lease gone: %w", driver.ErrNotHeld)
			l.untrack(r.Key, r.Owner)
		case unacked != nil && unacked[k] != nil:
			r.Err = fmt.Errorf("redlock: renew: %w", unacked[k])
		case elapsed >= validity:
			r.Err = fmt.Errorf("redlock: renewal took %v, longer than the validity %v", elapsed.Round(time.Millisecond), validity)
		default:
			r.Validity, r.Err = validity, nil
		}
	}
}

// lengthened records that owner's lease of key now outlives QueueHold:
// its release deletes it rather than leave it to expire.
func (l *locker) lengthened(key string, owner driver.Owner) {
	l.mu.Lock()
	if h, ok := l.held[key]; ok && h.owner == owner && h.short {
		h.short = false
		l.held[key] = h
	}
	l.mu.Unlock()
}

// inspectList is Inspect by the list protocol: the head's record.
func (l *locker) inspectList(ctx context.Context, key string) (driver.Holder, bool, error) {
	lock, _ := lockKeys(l.cfg.prefix, key)
	c := newCall(listInspectScript, 1)
	c.args = append(c.args, lock)
	reply, err := l.nodes[0].do(ctx, l.cfg.opTimeout(), c)
	if wrongType(err) {
		// The earlier layout's string: its holder record (or a key kept
		// for a waiter, held by nobody).
		reply, err = l.nodes[0].do(ctx, l.cfg.opTimeout(), call{cmd: "GET", args: []any{lock}})
		if v, ok := reply.([]byte); ok && kept(v) {
			reply = nil
		}
	}
	if err != nil {
		return driver.Holder{}, false, fmt.Errorf("redlock: inspect: %w", err)
	}
	v, ok := reply.([]byte)
	if !ok {
		if reply == nil {
			return driver.Holder{}, false, nil
		}
		return driver.Holder{}, false, fmt.Errorf("redis %s: unexpected reply %T to inspect", l.nodes[0].name, reply)
	}
	_, holder := parseRecord(string(v))
	return holder, true, nil
}

// releaseAllList is releaseAll by the list protocol: every member of this
// Locker's leaves its list, in one round trip, and the new heads are
// woken, in one more.
func (l *locker) releaseAllList(ctx context.Context, held map[string]heldKey, waits map[driver.Owner]*waiting) error {
	var calls []call
	leave := func(lock, member, lease string) {
		calls = append(calls,
			call{cmd: "LREM", args: []any{lock, 0, member}},
			call{cmd: "DEL", args: []any{lease}},
			call{cmd: "LINDEX", args: []any{lock, 0}})
	}
	for _, h := range held {
		if h.lmember != nil {
			leave(h.lock.(string), h.lmember.(string), h.lease.(string))
		}
	}
	for _, w := range waits {
		if st, _ := l.waits.listState(w); st.member != "" {
			lock, _ := lockKeys(l.cfg.prefix, w.key)
			leave(lock, st.member, st.lease)
		}
	}
	if len(calls) == 0 {
		return nil
	}
	timeout := l.cfg.opTimeout()
	out := l.nodes[0].pipeline(ctx, timeout, calls)
	if err := firstErr(out); err != nil {
		return fmt.Errorf("redlock: release: %w", err)
	}
	var wakes []call
	seen := make(map[string]bool)
	for i := 2; i < len(out); i += 3 {
		head, _ := out[i].Reply.([]byte)
		c, ok := l.wakeCall(head)
		if !ok || seen[string(head)] {
			continue
		}
		seen[string(head)] = true
		wakes = append(wakes, c)
	}
	if len(wakes) > 0 {
		if err := firstErr(l.nodes[0].pipeline(ctx, timeout, wakes)); err != nil {
			return fmt.Errorf("redlock: release: wake the next waiters: %w", err)
		}
	}
	return nil
}

// plainCmds is a few plain commands (no script: nothing to send again as
// EVAL) and their results, in one allocation with no slices of their own:
// a release's round trip.
type plainCmds struct {
	cmds [3]pipeline.Cmd
	args [8]any
	out  [3]result
	n, a int
}

// add appends a command and returns its index.
func (b *plainCmds) add(name string, args ...any) int {
	i, from := b.n, b.a
	b.a += copy(b.args[b.a:], args)
	b.cmds[i] = pipeline.Cmd{Name: name, Args: b.args[from:b.a:b.a]}
	b.n++
	return i
}

// run sends b's commands in one round trip and returns their results.
func (b *plainCmds) run(ctx context.Context, l *locker, timeout time.Duration) []result {
	out := b.out[:b.n]
	l.nodes[0].doCmds(ctx, timeout, b.cmds[:b.n], out)
	return out
}
