package redlock

import (
	"errors"
	"strings"

	"github.com/gomodule/redigo/redis"
)

// script is a Lua script sent by EVALSHA, and by EVAL when the server
// answers NOSCRIPT (its cache was flushed or it restarted), which loads it
// again: what redis.Script's Do does. The driver does not send through
// redis.Script because its methods write to a redis.Conn, while the
// pipelined transport takes a command and its arguments; and because it
// builds the argument list, boxing the hash, on every call, where a call
// here boxes its hash once and builds its arguments once for both tries
// and for a batch. redis.Script gives the hash.
type script struct {
	src     string
	hashArg any // the SHA1 of src, boxed once rather than on every call
	nkeys   int
}

func newScript(nkeys int, src string) *script {
	return &script{src: src, hashArg: redis.NewScript(nkeys, src).Hash(), nkeys: nkeys}
}

// call is one script invocation, or one plain command when s is nil. A
// script's args start with its hash and its key count.
type call struct {
	s    *script
	cmd  string // the plain command's name
	args []any
}

// newCall returns a call of s with room for n keys and arguments.
func newCall(s *script, n int) call {
	args := make([]any, 2, 2+n)
	args[0], args[1] = s.hashArg, s.nkeys
	return call{s: s, args: args}
}

// name is the command c sends first.
func (c call) name() string {
	if c.s != nil {
		return "EVALSHA"
	}
	return c.cmd
}

// evalArgs returns the EVAL form of c's arguments.
func (c call) evalArgs() []any {
	args := make([]any, len(c.args))
	copy(args, c.args)
	args[0] = c.s.src
	return args
}

// noScript reports whether err says the server lacks c's script.
func (c call) noScript(err error) bool { return c.s != nil && isNoScript(err) }

func isNoScript(err error) bool {
	if err == nil {
		return false // before errors.As, whose target would escape
	}
	var e redis.Error
	return errors.As(err, &e) && strings.HasPrefix(string(e), "NOSCRIPT")
}

// The scripts compare and act in one step, so that only the owner can
// release or extend. Each runs on one node; the quorum is counted in Go.
// Every key a script touches is passed in KEYS and shares one hash tag.
//
// A lock's value is its holder record (see value.go), the owner's 32 hex
// digits first. Acquiring compares those 32 bytes: a retried attempt
// carries another attempt number than the grant it recognises, and
// rewrites the record with its own. Releasing and extending compare the whole record,
// which the client knows (a prefix costs Redis a string per call), or,
// from a client that made no grant, the owner alone.

// acquireScript takes the lock if it is free, or recognises the caller's
// own grant (a retried attempt) and writes it again with this attempt's
// record and TTL, keeping its token. No fencing counter. Where the server
// takes SET with NX and GET, it runs only for a retried attempt.
//
// KEYS: lock. ARGV: record (token 0), ttl ms. Returns the token the lock's
// record carries (0 unless an earlier fenced attempt of this owner took
// it), or, when another owner holds the lock, that owner's record (as the
// SET it stands in for does).
var acquireScript = newScript(1, `
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
if string.sub(cur, 1, 32) == string.sub(ARGV[1], 1, 32) then
  local token = string.match(cur, '^%x+ (%d+)') or '0'
  redis.call('SET', KEYS[1], string.sub(ARGV[1], 1, 33) .. token .. string.sub(ARGV[1], 35), 'PX', ARGV[2])
  return tonumber(token)
end
return cur
`)

// fencedAcquireScript is acquireScript that also bumps the key's fencing
// counter for a new grant and writes the token into the record (a single
// node fences when asked).
//
// KEYS: lock, fence. ARGV: record (token 0), ttl ms. Returns the token, or
// -1 when another owner holds the lock. The token goes into the record as
// the digits of %d: Lua would write a number from 10^14 up as 1e+14.
var fencedAcquireScript = newScript(2, `
local cur = redis.call('GET', KEYS[1])
local token
if not cur then
  token = string.format('%d', redis.call('INCR', KEYS[2]))
elseif string.sub(cur, 1, 32) == string.sub(ARGV[1], 1, 32) then
  token = string.match(cur, '^%x+ (%d+)') or '0'
else
  return -1
end
redis.call('SET', KEYS[1], string.sub(ARGV[1], 1, 33) .. token .. string.sub(ARGV[1], 35), 'PX', ARGV[2])
return tonumber(token)
`)

// The wait queue (queue.go). Three scripts share the Lua below, which
// finds the queue's head: its first member whose deadline (server time,
// ms) has not passed. A dead head drops every member whose deadline
// passed at once (in chunks: unpack takes a few thousand values at most),
// so no number of dead waiters hides a live one; a member without a
// deadline (its place lost) is dropped too. And it keeps the lock
// for that head ("q <member>", expiring with the head's deadline) and
// publishes the head's owner on its client's channel (queue.go). A
// reservation is nobody's grant: no owner's 32 hex digits begin it, so SET
// NX, renewals, releases and the acquire scripts all see another owner's
// record.
//
// They read the server's clock (TIME) and then write, which Redis 3.2
// to 4.x refuse from a script replicated whole: replicate_commands,
// called before any write, replicates its writes instead (the default
// from Redis 5 on, where the call does nothing). Redis before 3.2 lacks
// it and is not supported.
//
// KEYS of each: lock, queue, deadlines.
const queueLua = `
redis.replicate_commands()
local now
local function clock()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
local function head()
  local h = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not h then return nil end
  local d = tonumber(redis.call('ZSCORE', KEYS[3], h))
  if d and d > clock() then return h, d end
  local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', clock())
  for i = 1, #dead, 1000 do
    redis.call('ZREM', KEYS[2], unpack(dead, i, math.min(i + 999, #dead)))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', clock())
  while true do
    h = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
    if not h then return nil end
    d = tonumber(redis.call('ZSCORE', KEYS[3], h))
    if d then return h, d end
    redis.call('ZREM', KEYS[2], h)
  end
end
local function enqueue(member, stamp, hold)
  redis.call('ZADD', KEYS[2], 'NX', stamp, member)
  redis.call('ZADD', KEYS[3], clock() + hold, member)
  redis.call('PEXPIRE', KEYS[2], 2 * hold)
  redis.call('PEXPIRE', KEYS[3], 2 * hold)
end
local function dequeue(member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[3], member)
end
local function keep(h, d, chan, wake)
  redis.call('SET', KEYS[1], 'q ' .. h, 'PX', math.max(d - clock(), 1))
  if not wake then return end
  if chan == '' then
    redis.pcall('SPUBLISH', KEYS[1] .. ':wake:' .. string.sub(h, 33), string.sub(h, 1, 32))
  else
    redis.call('PUBLISH', chan .. string.sub(h, 33), string.sub(h, 1, 32))
  end
end
`

// shardedWake is the channel prefix the queue scripts take on a Redis
// Cluster: they then wake the head by SPUBLISH on <lock key>:wake:<client
// id>, a channel in the lock key's slot (the only slot a script there may
// SPUBLISH to; a PUBLISH would go to every node of the cluster), rather
// than by PUBLISH on <prefix>:wake:<client id>. By
// pcall: a server without SPUBLISH (before Redis 7) keeps the key all the
// same, and its waiters, whose SSUBSCRIBE fails too, poll.
const shardedWake = ""

// waitScript is a waiting attempt (AcquireRequest.Wait). It grants the
// key when it is the caller's own grant (a retried attempt, rewritten as
// acquireScript does), kept for the caller, or free with the caller first
// in the queue (or none queued); the caller then leaves the queue.
// Otherwise the caller joins the queue, keeping its arrival stamp if it
// was in it, and its deadline is pushed back; and if the key is free with
// another waiter first (the holder's grant expired, a node restarted
// empty), the key is kept for that waiter, who is woken. Every grant
// takes the caller out of the queue.
//
// KEYS: lock, queue, deadlines, fence. ARGV: record (token 0), ttl ms,
// member, stamp, hold ms, channel prefix, "1" to fence. Returns the token
// (0 unfenced), or the value that keeps the caller out.
var waitScript = newScript(4, queueLua+`
local rec, me = ARGV[1], ARGV[3]
local cur = redis.call('GET', KEYS[1])
local token
if cur and string.sub(cur, 1, 32) == string.sub(rec, 1, 32) then
  token = string.match(cur, '^%x+ (%d+)') or '0'
  dequeue(me)
else
  local queued = cur == 'q ' .. me
  if not queued then
    if cur then
      enqueue(me, ARGV[4], tonumber(ARGV[5]))
      return cur
    end
    local h, d = head()
    if h and h ~= me then
      enqueue(me, ARGV[4], tonumber(ARGV[5]))
      h, d = head() -- the caller's stamp may come first (a node restarted empty)
      if h ~= me then
        keep(h, d, ARGV[6], true)
        return 'q ' .. h
      end
    end
    queued = h ~= nil
  end
  if queued then dequeue(me) end
  token = '0'
  if ARGV[7] == '1' then
    token = string.format('%d', redis.call('INCR', KEYS[4]))
  end
end
redis.call('SET', KEYS[1], string.sub(rec, 1, 33) .. token .. string.sub(rec, 35), 'PX', ARGV[2])
return tonumber(token)
`)

// releaseScript deletes the lock if the caller owns it, or gives up the
// key kept for the caller, and takes the caller (member, "" if none) out
// of the queue; then it keeps the key for the queue's head and wakes it,
// or, with nobody queued, leaves it free. A key already free (the
// caller's lease expired) is kept for the head too: nobody else would
// wake it.
//
// Its first lines are the common release: no member to take out of the
// queue (a TryLock's grant, or a Lock's on one node: waiters.granted) and
// nobody queued. It deletes before the queue's Lua runs, which would make
// the release cost the server about 1.5 times as much (by INFO
// commandstats: its functions are made afresh at every call, and head
// reads the queue with ZRANGE; EXISTS, as an empty sorted set is no key,
// is cheaper). The switch to effects replication comes first all the
// same, the script's first write being the delete (queueLua's second call
// changes nothing).
//
// KEYS: lock, queue, deadlines. ARGV: record (or the owner alone),
// member, channel prefix. Returns 1 if released, 0 if not held (a key
// kept for the caller is not held by it).
var releaseScript = newScript(3, `
redis.replicate_commands()
local rec, me = ARGV[1], ARGV[2]
local cur = redis.call('GET', KEYS[1])
local owned = cur == rec or (cur and #rec == 32 and string.sub(cur, 1, 32) == rec)
if owned and me == '' and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
`+queueLua+`
local released = 0
if owned then
  released = 1
elseif cur and string.sub(cur, 1, 34) ~= 'q ' .. string.sub(rec, 1, 32) then
  if me ~= '' then dequeue(me) end
  return 0
end
if me ~= '' then dequeue(me) end
local h, d = head()
if h then
  keep(h, d, ARGV[3], true)
elseif cur then
  redis.call('DEL', KEYS[1])
end
return released
`)

// withdrawScript takes back a grant of an attempt that failed (Redlock:
// granted on too few nodes), without waking anyone who gains nothing: with
// member "" it deletes the grant; with the waiting caller's member it puts
// the caller back in the queue with its arrival stamp and keeps the key
// for the head, waking it unless it is the caller. A split (nodes keeping
// the key for different waiters) ends once every waiter has asked every
// node: they all then have one head, the earliest stamp.
//
// KEYS: lock, queue, deadlines. ARGV: record (or the owner alone),
// member, stamp, hold ms, channel prefix. Returns 1 if withdrawn, 0 if
// not held.
var withdrawScript = newScript(3, queueLua+`
local rec, me = ARGV[1], ARGV[2]
local cur = redis.call('GET', KEYS[1])
if not (cur == rec or (cur and #rec == 32 and string.sub(cur, 1, 32) == rec)) then
  return 0
end
if me == '' then
  redis.call('DEL', KEYS[1])
  return 1
end
enqueue(me, ARGV[3], tonumber(ARGV[4]))
local h, d = head()
if h then
  keep(h, d, ARGV[5], h ~= me)
else
  redis.call('DEL', KEYS[1])
end
return 1
`)

// extendScript resets the TTL if the caller owns the lock. It never
// recreates a lock that is gone: that loss must be reported.
//
// KEYS: lock. ARGV: record (or the owner alone), ttl ms. Returns 1 if
// extended, 0 if not held.
var extendScript = newScript(1, `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or (cur and #ARGV[1] == 32 and string.sub(cur, 1, 32) == ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// inspectScript reads the holder record (a script so that it goes the
// way of every other call: EVALSHA, pipelined when calls overlap).
//
// KEYS: lock. Returns nil when free, else the record.
var inspectScript = newScript(1, `return redis.call('GET', KEYS[1])`)

// kept reports whether a lock's value keeps the key for a waiter: held by
// nobody.
func kept(v []byte) bool { return len(v) >= 2 && v[0] == 'q' && v[1] == ' ' }
