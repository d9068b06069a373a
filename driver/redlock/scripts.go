package redlock

import (
	"crypto/sha1"
	"encoding/hex"
)

// script is a Lua script sent by EVALSHA, and by EVAL when the server
// answers NOSCRIPT (its cache was flushed or it restarted), which loads it
// again. redis.Script does the same one call at a time; pipelined renewals
// need the pieces.
type script struct {
	src, hash string
	hashArg   any // hash, boxed once rather than on every call
	nkeys     int
}

func newScript(nkeys int, src string) *script {
	sum := sha1.Sum([]byte(src))
	hash := hex.EncodeToString(sum[:])
	return &script{src: src, hash: hash, hashArg: hash, nkeys: nkeys}
}

// The scripts compare and act in one step, so that only the owner can
// release or extend. Each runs on one node; the quorum is counted in Go.
// Every key a script touches is passed in KEYS and shares one hash tag.

// acquireScript takes the lock if it is free, or recognises the caller's
// own grant (a retried attempt) and refreshes it.
//
// KEYS: lock, holder, fence. ARGV: owner, ttl ms, fence (1 or 0), host,
// pid, since (unix ms). Returns the fencing token (0 without fencing), or
// -1 when another owner holds the lock.
var acquireScript = newScript(3, `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return tonumber(redis.call('HGET', KEYS[2], 'token') or '0')
end
if cur then
  return -1
end
local token = 0
if ARGV[3] == '1' then
  token = redis.call('INCR', KEYS[3])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'token', token, 'host', ARGV[4], 'pid', ARGV[5], 'since', ARGV[6], 'owner', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return token
`)

// releaseScript deletes the lock if the caller owns it and publishes the
// release on the channel named like the lock key, waking waiters.
//
// KEYS: lock, holder. ARGV: owner. Returns 1 if released, 0 if not held.
var releaseScript = newScript(2, `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('PUBLISH', KEYS[1], '')
  return 1
end
return 0
`)

// extendScript resets the TTL if the caller owns the lock. It never
// recreates a lock that is gone: that loss must be reported.
//
// KEYS: lock, holder. ARGV: owner, ttl ms. Returns 1 if extended, 0 if not
// held.
var extendScript = newScript(2, `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
`)

// inspectScript reads the owner and the holder hash together.
//
// KEYS: lock, holder. Returns nil when free, else {owner, {field, value...}}.
var inspectScript = newScript(2, `
local cur = redis.call('GET', KEYS[1])
if not cur then
  return false
end
return {cur, redis.call('HGETALL', KEYS[2])}
`)
