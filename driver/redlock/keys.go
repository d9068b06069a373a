package redlock

import "strings"

// Key layout. A lock on key K is Redis keys sharing the hash tag {K'},
// where K' is K with '%', '{' and '}' percent-escaped, so they live in one
// Redis Cluster slot whatever K holds. On one server (list.go):
//
//	<prefix>:{K'}            a list of members, the head holding the key
//	<prefix>:{K'}:l:<member> each member's lease: its holder record
//	                         (value.go); PX = QueueHold, a grant's TTL
//	<prefix>:{K'}:fence      the fencing counter, made by the first
//	                         fenced grant, never expires
//
// With Redlock, and on a Redis Cluster (queue.go):
//
//	<prefix>:{K'}         the lock: its holder record, or "q <member>"
//	                      while kept for a waiter; PX = TTL
//	<prefix>:{K'}:q       the wait queue: a sorted set of members (owner
//	                      and client id, queue.go) scored by arrival
//	<prefix>:{K'}:qd      each member's deadline (server ms): passed over after
//	<prefix>:{K'}:fence   the fencing counter (on a Redis Cluster)
//
// A waiter is woken on its client's own channel, <prefix>:wake:<client id>
// (on a Redis Cluster <prefix>:{K'}:wake:<client id>). Escaping keeps the
// tag non-empty and free of '}' (a key "}x" would otherwise give the
// empty tag "{}", and Redis would hash each name whole).
const fenceSuffix = ":fence"

// keySet is the Redis keys of one lock, cut from one string: "<lock>:qd"
// then "<lock>:fence".
type keySet struct {
	lock, queue, deadlines, fence string
}

func keysOf(prefix, key string) keySet {
	var b strings.Builder
	b.Grow(2*(len(prefix)+len(key)+3) + 3 + len(fenceSuffix))
	writeLockKey(&b, prefix, key)
	n := b.Len()
	b.WriteString(":qd")
	b.WriteString(b.String()[:n])
	b.WriteString(fenceSuffix)
	s := b.String()
	return keySet{lock: s[:n], queue: s[:n+2], deadlines: s[:n+3], fence: s[n+3:]}
}

// lockKeys returns the lock key and the fencing counter's key.
func lockKeys(prefix, key string) (lock, fence string) {
	k := keysOf(prefix, key)
	return k.lock, k.fence
}

// LockKey returns the Redis key that holds the lock on key under prefix
// (DefaultPrefix unless the DSN sets one), for operators. On one server
// it is a list whose head holds the key: redis-cli LINDEX "$(...)" 0 gives
// the head, and GET "$(...):l:<head>" its holder record (owner, token,
// since, pid, attempt, host), PTTL its remaining time. With Redlock and on
// a Redis Cluster, GET "$(...)" gives the record. Inspect (mutexkit
// status) reads either.
func LockKey(prefix, key string) string {
	lock, _ := lockKeys(prefix, key)
	return lock
}

// writeLockKey writes the lock key of key under prefix to b:
// <prefix>:{K'}.
func writeLockKey(b *strings.Builder, prefix, key string) {
	b.WriteString(prefix)
	b.WriteString(":{")
	escapeKey(b, key)
	b.WriteByte('}')
}

func escapeKey(b *strings.Builder, key string) {
	if !strings.ContainsAny(key, "%{}") {
		b.WriteString(key)
		return
	}
	for i := 0; i < len(key); i++ {
		switch c := key[i]; c {
		case '%':
			b.WriteString("%25")
		case '{':
			b.WriteString("%7B")
		case '}':
			b.WriteString("%7D")
		default:
			b.WriteByte(c)
		}
	}
}
