package redlock

import "strings"

// Key layout. A lock on key K is three Redis keys sharing the hash tag
// {K'}, where K' is K with '%', '{' and '}' percent-escaped, so they live in
// one Redis Cluster slot whatever K holds:
//
//	<prefix>:{K'}         the lock: the owner's 32 hex digits, with PX = TTL
//	<prefix>:{K'}:holder  a hash (token, host, pid, since, owner), same PX
//	<prefix>:{K'}:fence   the fencing counter (single node), never expires
//
// Releases are published on the channel named like the lock key.
// Escaping keeps the tag non-empty and free of '}' (a key "}x" would
// otherwise give the empty tag "{}", and Redis would hash each name whole).
const (
	holderSuffix = ":holder"
	fenceSuffix  = ":fence"
)

// lockKeys returns the lock key and the holder key; the lock key shares
// the holder key's bytes, so the pair costs one allocation.
func lockKeys(prefix, key string) (lock, holder string) {
	var b strings.Builder
	b.Grow(len(prefix) + len(key) + 3 + len(holderSuffix))
	b.WriteString(prefix)
	b.WriteString(":{")
	escapeKey(&b, key)
	b.WriteByte('}')
	n := b.Len()
	b.WriteString(holderSuffix)
	holder = b.String()
	return holder[:n], holder
}

// fenceKey returns the counter's key for a lock key.
func fenceKey(lock string) string { return lock + fenceSuffix }

// LockKey returns the Redis key that holds the lock on key under prefix
// (DefaultPrefix unless the DSN sets one), for operators:
// redis-cli GET "$(...)" shows its owner, PTTL its remaining time.
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
