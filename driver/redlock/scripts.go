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

// releaseScript deletes the lock if the caller owns it and publishes the
// release on the channel named like the lock key, waking waiters.
//
// KEYS: lock. ARGV: record (or the owner alone). Returns 1 if released, 0
// if not held.
var releaseScript = newScript(1, `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or (cur and #ARGV[1] == 32 and string.sub(cur, 1, 32) == ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[1], '')
  return 1
end
return 0
`)

// withdrawScript is releaseScript without the PUBLISH: it takes back the
// partial grants of an attempt that failed. Waiters have nothing to learn
// from it (the key is still held on a quorum), and the attempt's own
// Lock, which watches the key, would be woken by it into its next attempt
// at once, taking and withdrawing the free nodes again in a loop.
//
// KEYS: lock. ARGV: record. Returns 1 if deleted, 0 if not held.
var withdrawScript = newScript(1, `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or (cur and #ARGV[1] == 32 and string.sub(cur, 1, 32) == ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
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
