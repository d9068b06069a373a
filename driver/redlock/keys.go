package redlock

import "strings"

// Key layout. A lock on key K is at most two Redis keys sharing the hash
// tag {K'}, where K' is K with '%', '{' and '}' percent-escaped, so they
// live in one Redis Cluster slot whatever K holds:
//
//	<prefix>:{K'}         the lock: its holder record (value.go), PX = TTL
//	<prefix>:{K'}:fence   the fencing counter (single node, made by the
//	                      first fenced grant), never expires
//
// Releases are published on the channel named like the lock key.
// Escaping keeps the tag non-empty and free of '}' (a key "}x" would
// otherwise give the empty tag "{}", and Redis would hash each name whole).
const fenceSuffix = ":fence"

// lockKeys returns the lock key and the fencing counter's key; the lock
// key shares the counter key's bytes, so the pair costs one allocation.
func lockKeys(prefix, key string) (lock, fence string) {
	var b strings.Builder
	b.Grow(len(prefix) + len(key) + 3 + len(fenceSuffix))
	b.WriteString(prefix)
	b.WriteString(":{")
	escapeKey(&b, key)
	b.WriteByte('}')
	n := b.Len()
	b.WriteString(fenceSuffix)
	fence = b.String()
	return fence[:n], fence
}

// LockKey returns the Redis key that holds the lock on key under prefix
// (DefaultPrefix unless the DSN sets one), for operators:
// redis-cli GET "$(...)" shows its holder record (owner, token, since,
// pid, attempt, host), PTTL its remaining time.
func LockKey(prefix, key string) string {
	lock, _ := lockKeys(prefix, key)
	return lock
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
