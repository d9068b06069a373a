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
//   - Lock: SET lease PX QueueHold, then RPUSH member, in one round trip.
//     RPUSH answering 1 means the member is the head: granted. Otherwise
//     the waiter is queued. While it waits its Locker refreshes the lease
//     and finds its place (PEXPIRE, LPOS) at least every refreshEvery,
//     which also shows a head whose wake-up was lost.
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
// fence, wake channel prefix. Returns {token, member} when granted (the
// member is the earlier attempt's for a recognised grant), else the head.
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
return {tonumber(token), ARGV[1]}
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
// alone); it wakes the new head.
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

// newMember returns a new member of owner's.
func (l *locker) newMember(owner driver.Owner) string {
	return owner.String() + l.waits.id + strconv.FormatUint(l.attempts.Add(1), 16)
}

// acquireList is Acquire by the list protocol.
func (l *locker) acquireList(ctx context.Context, req driver.AcquireRequest, start time.Time, ttl, validity time.Duration) (driver.Grant, error) {
	ks := keysOf(l.cfg.prefix, req.Key)
	g := heldKey{owner: req.Owner, ttl: ttl, lock: ks.lock, rec: record(req.Owner, l.attempts.Add(1), req.Holder)}
	timeout := l.cfg.ttlTimeout(ttl)
	if !req.Wait {
		return l.tryList(ctx, req, g, timeout, validity)
	}
	w, send := l.waits.ask(req.Key, req.Owner, l.watch.ensure() && l.watch.healthy(1) && !l.cfg.sendAll)
	if !send {
		return driver.Grant{}, errLocked
	}
	st := l.waits.listState(w)
	var gr driver.Grant
	var err error
	switch {
	case st.member == "" || st.unanswered:
		gr, err = l.enqueue(ctx, req, w, st, g, ks.fence, start, timeout, validity)
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
func (l *locker) tryList(ctx context.Context, req driver.AcquireRequest, g heldKey, timeout, validity time.Duration) (driver.Grant, error) {
	m := l.newMember(req.Owner)
	flag := "0"
	if req.Fencing {
		flag = "1"
	}
	c := newCall(listTryScript, 7)
	c.args = append(c.args, g.lock, leaseKey(g.lock.(string), m), m, g.rec, l.ttlArg(g.ttl.Milliseconds()), flag, l.wakeArg)
	out, unacked := l.write(ctx, timeout, []call{c}, validity)
	reply, err := out[0].Reply, out[0].Err
	if err != nil {
		return driver.Grant{}, acquireErr(err)
	}
	v, ok := reply.([]any)
	if !ok {
		if _, isHead := reply.([]byte); isHead {
			return driver.Grant{}, errLocked
		}
		return driver.Grant{}, fmt.Errorf("redis %s: unexpected reply %T to acquire", l.nodes[0].name, reply)
	}
	token, _ := v[0].(int64)
	member, _ := v[1].([]byte)
	if len(v) != 2 || len(member) == 0 {
		return driver.Grant{}, fmt.Errorf("redis %s: unexpected reply to acquire", l.nodes[0].name)
	}
	g.lmember, g.lease, g.rec = string(member), leaseKey(g.lock.(string), string(member)), withToken(g.rec.(string), token)
	g.short = g.ttl <= driver.QueueHold
	if unacked != nil {
		l.giveBackList(ctx, timeout, g.lock.(string), g.lmember, g.lease)
		return driver.Grant{}, fmt.Errorf("redlock: acquire: %w; given back", unacked)
	}
	l.track(req.Key, g)
	return driver.Grant{Token: uint64(token), Validity: validity}, nil
}

// enqueue puts the owner's new member at the tail of the list, first
// taking out the member of an attempt that went unanswered (st.member,
// which the server may or may not have). RPUSH answering 1 grants the
// key.
func (l *locker) enqueue(ctx context.Context, req driver.AcquireRequest, w *waiting, st listWait, g heldKey, fence string, start time.Time, timeout, validity time.Duration) (driver.Grant, error) {
	lock := g.lock.(string)
	m := l.newMember(req.Owner)
	lease := leaseKey(lock, m)
	old := st.member != "" && st.unanswered
	var calls []call
	if old {
		calls = append(calls,
			call{cmd: "LINDEX", args: []any{lock, 0}},
			call{cmd: "LREM", args: []any{lock, 0, st.member}},
			call{cmd: "DEL", args: []any{st.lease}})
	}
	calls = append(calls,
		call{cmd: "SET", args: []any{lease, g.rec, "PX", holdMs}},
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
	n, _ := out[push].Reply.(int64)
	if unacked != nil { // a failover could lose the place: the next attempt makes a new one
		l.waits.again(w)
		if n == 1 {
			l.giveBackList(ctx, timeout, lock, m, lease)
		}
		return driver.Grant{}, fmt.Errorf("redlock: acquire: %w", unacked)
	}
	l.waits.answered(w, start)
	if old { // the old member may have been the head: pass the key on
		before, _ := out[0].Reply.([]byte)
		if head, _ := out[len(out)-1].Reply.([]byte); string(before) == st.member && string(head) != m {
			l.wakeHead(ctx, timeout, head)
		}
	}
	if n == 1 {
		return l.grantHead(ctx, req, w, l.waits.listState(w), g, fence, start, timeout, validity)
	}
	return driver.Grant{}, errLocked
}

// refresh extends the waiter's lease and finds its place (LPOS): the
// waiter holds the key at the head. One whose place has not moved since
// its last refresh drops the dead heads (listReapScript). A waiter whose
// lease is gone, or whose member is not in the list (it was deleted),
// enqueues again.
func (l *locker) refresh(ctx context.Context, req driver.AcquireRequest, w *waiting, st listWait, g heldKey, fence string, start time.Time, timeout, validity time.Duration) (driver.Grant, error) {
	lock := g.lock.(string)
	_, hold := l.cfg.validity(driver.QueueHold)
	out, unacked := l.write(ctx, timeout, []call{
		{cmd: "PEXPIRE", args: []any{st.lease, holdMs}},
		{cmd: "LPOS", args: []any{lock, st.member}},
	}, hold)
	if err := firstErr(out); err != nil {
		return driver.Grant{}, acquireErr(err)
	}
	if unacked != nil { // the hold counts from the last acknowledged write
		return driver.Grant{}, fmt.Errorf("redlock: acquire: %w", unacked)
	}
	pos, inList := out[1].Reply.(int64)
	if out[0].Reply != int64(1) || !inList { // the place is lost, or will be
		st.unanswered = true
		return l.enqueue(ctx, req, w, st, g, fence, start, timeout, validity)
	}
	l.waits.answered(w, start)
	if pos > 0 && l.waits.sawPlace(w, pos) {
		head, err := l.reap(ctx, lock, st.member, timeout)
		if err != nil {
			return driver.Grant{}, err
		}
		if string(head) == st.member {
			pos = 0
		}
	}
	if pos == 0 {
		return l.grantHead(ctx, req, w, l.waits.listState(w), g, fence, start, timeout, validity)
	}
	return driver.Grant{}, errLocked
}

// reap runs listReapScript and returns the head.
func (l *locker) reap(ctx context.Context, lock, member string, timeout time.Duration) ([]byte, error) {
	c := newCall(listReapScript, 3)
	c.args = append(c.args, lock, l.wakeArg, member)
	reply, err := l.nodes[0].do(ctx, timeout, c)
	if err != nil {
		return nil, fmt.Errorf("redlock: acquire: %w", err)
	}
	head, _ := reply.([]byte)
	return head, nil
}

// grantHead turns the waiter's place at the head into its grant. Its
// validity counts from its last lease write (st.wrote); with too little
// left, or a fenced grant asked, it asks the server first, which extends
// the lease to the TTL.
func (l *locker) grantHead(ctx context.Context, req driver.AcquireRequest, w *waiting, st listWait, g heldKey, fence string, start time.Time, timeout, validity time.Duration) (driver.Grant, error) {
	_, hold := l.cfg.validity(driver.QueueHold)
	v := min(validity, st.wrote.Add(hold).Sub(start))
	g.lmember, g.lease, g.short = st.member, st.lease, true
	var token int64
	switch {
	case req.Fencing:
		c := newCall(listFenceScript, 6)
		c.args = append(c.args, g.lock, st.lease, fence, st.member, g.rec, l.ttlArg(g.ttl.Milliseconds()))
		out, unacked := l.write(ctx, timeout, []call{c}, validity)
		reply, err := out[0].Reply, out[0].Err
		if err == nil {
			err = unacked
		}
		if err != nil {
			return driver.Grant{}, fmt.Errorf("redlock: acquire: %w", err)
		}
		if token, _ = reply.(int64); token <= 0 {
			l.waits.again(w) // dropped meanwhile: enqueue again
			return driver.Grant{}, errLocked
		}
		v, g.short, g.rec = validity, false, withToken(g.rec.(string), token)
	case v < hold/3:
		out, unacked := l.write(ctx, timeout, []call{{cmd: "PEXPIRE", args: []any{st.lease, l.ttlArg(g.ttl.Milliseconds())}}}, validity)
		reply, err := out[0].Reply, out[0].Err
		if err == nil {
			err = unacked
		}
		if err != nil {
			return driver.Grant{}, fmt.Errorf("redlock: acquire: %w", err)
		}
		if reply != int64(1) {
			l.waits.again(w)
			return driver.Grant{}, errLocked
		}
		v, g.short = validity, g.ttl <= driver.QueueHold
	}
	if v <= 0 {
		return driver.Grant{}, errTooSlow(time.Since(start), validity)
	}
	l.waits.leave(req.Owner)
	l.track(req.Key, g)
	return driver.Grant{Token: uint64(token), Validity: v}, nil
}

// releaseList is Release by the list protocol.
func (l *locker) releaseList(ctx context.Context, key string, owner driver.Owner, h heldKey, mine bool) error {
	timeout := l.cfg.opTimeout()
	if mine {
		timeout = l.cfg.ttlTimeout(h.ttl)
	}
	lock := h.lock.(string)
	st, waiting := l.waits.leaveList(owner)
	switch {
	case mine && h.lmember != "":
		// Every copy: a client that sent its RPUSH twice (go-redis's
		// MaxRetries after a lost reply) queued the member twice.
		calls := []call{{cmd: "LREM", args: []any{lock, 0, h.lmember}}}
		if !h.short {
			calls = append(calls, call{cmd: "DEL", args: []any{h.lease}})
		}
		calls = append(calls, call{cmd: "LINDEX", args: []any{lock, 0}})
		out := l.nodes[0].pipeline(ctx, timeout, calls)
		if err := firstErr(out); err != nil {
			return fmt.Errorf("redlock: release: %w", err)
		}
		if n, _ := out[0].Reply.(int64); n == 0 {
			return fmt.Errorf("redlock: %w", driver.ErrNotHeld)
		}
		head, _ := out[len(out)-1].Reply.([]byte)
		l.wakeHead(ctx, timeout, head)
		return nil
	case waiting && st.member != "":
		out := l.nodes[0].pipeline(ctx, timeout, []call{
			{cmd: "LINDEX", args: []any{lock, 0}},
			{cmd: "LREM", args: []any{lock, 0, st.member}},
			{cmd: "DEL", args: []any{st.lease}},
			{cmd: "LINDEX", args: []any{lock, 0}},
		})
		if err := firstErr(out); err != nil {
			return fmt.Errorf("redlock: release: %w", err)
		}
		before, _ := out[0].Reply.([]byte)
		if head, _ := out[3].Reply.([]byte); string(before) == st.member {
			l.wakeHead(ctx, timeout, head)
		}
		return fmt.Errorf("redlock: %w", driver.ErrNotHeld)
	}
	c := newCall(listReleaseOwnerScript, 3)
	c.args = append(c.args, lock, owner.String(), l.wakeArg)
	reply, err := l.nodes[0].do(ctx, timeout, c)
	switch {
	case err != nil:
		return fmt.Errorf("redlock: release: %w", err)
	case reply == int64(1):
		return nil
	}
	return fmt.Errorf("redlock: %w", driver.ErrNotHeld)
}

// wakeHead publishes head (a member, nil if none) on its client's
// channel. A wake-up that fails is not an error of the call that made
// it: the waiter finds it heads the list by its next refresh.
func (l *locker) wakeHead(ctx context.Context, timeout time.Duration, head []byte) {
	if len(head) < ownerLen+16 {
		return
	}
	channel := l.wakeArg.(string) + string(head[ownerLen:ownerLen+16])
	l.nodes[0].do(ctx, timeout, call{cmd: "PUBLISH", args: []any{channel, head}})
}

// acquireErr is an acquire's error. A key stored otherwise than as a
// list is refused as held: a client of the earlier layout (one string,
// scripts.go) holds it, and keeps it from this one as this one's list
// keeps it from that one (WRONGTYPE both ways).
func acquireErr(err error) error {
	var e redis.Error
	switch {
	case errors.As(err, &e) && strings.HasPrefix(string(e), "WRONGTYPE"):
		return fmt.Errorf("redlock: the lock key holds a value of another layout (a client of an earlier version of this driver?): %w: %w", driver.ErrLocked, err)
	case errors.As(err, &e) && strings.Contains(strings.ToLower(string(e)), "unknown command"):
		return fmt.Errorf("redlock: acquire: one server's queue needs Redis 6.0.6 or later (LPOS): %w", err)
	}
	return fmt.Errorf("redlock: acquire: %w", err)
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
		if !mine || h.lmember == "" {
			h.lmember = "" // the owner alone: the script finds its member
		}
		c := newCall(listRenewScript, 4)
		c.args = append(c.args, h.lock, r.Owner.String(), h.lmember, l.ttlArg(ttl.Milliseconds()))
		calls = append(calls, c)
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
		ttl, validity := l.cfg.validity(r.TTL)
		switch {
		case res.Err != nil:
			r.Err = fmt.Errorf("redlock: renew: %w", res.Err)
		case res.Reply != int64(1):
			r.Err = fmt.Errorf("redlock: lease gone: %w", driver.ErrNotHeld)
			l.untrack(r.Key, r.Owner)
		case unacked != nil && unacked[k] != nil:
			r.Err = fmt.Errorf("redlock: renew: %w", unacked[k])
		case elapsed >= validity:
			r.Err = fmt.Errorf("redlock: renewal took %v, longer than the validity %v", elapsed.Round(time.Millisecond), validity)
		default:
			r.Validity, r.Err = validity, nil
			if ttl > driver.QueueHold {
				l.lengthened(r.Key, r.Owner)
			}
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
		if h.lmember != "" {
			leave(h.lock.(string), h.lmember, h.lease)
		}
	}
	for _, w := range waits {
		if st := l.waits.listState(w); st.member != "" {
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
		if len(head) < ownerLen+16 || seen[string(head)] {
			continue
		}
		seen[string(head)] = true
		wakes = append(wakes, call{cmd: "PUBLISH", args: []any{l.wakeArg.(string) + string(head[ownerLen:ownerLen+16]), head}})
	}
	if len(wakes) > 0 {
		if err := firstErr(l.nodes[0].pipeline(ctx, timeout, wakes)); err != nil {
			return fmt.Errorf("redlock: release: wake the next waiters: %w", err)
		}
	}
	return nil
}
