package redlock

import (
	"strings"
	"testing"
)

// hashTag is the part of a key name Redis Cluster hashes: between the
// first '{' and the next '}', when that is not empty; else the whole name.
func hashTag(name string) string {
	open := strings.IndexByte(name, '{')
	if open < 0 {
		return name
	}
	end := strings.IndexByte(name[open+1:], '}')
	if end <= 0 {
		return name
	}
	return name[open+1 : open+1+end]
}

func TestKeysShareOneSlot(t *testing.T) {
	for _, key := range []string{
		"orders", "}", "{", "{}", "}x{", "a{b}c", "%7D", "%", "ключ-🔒", "nul\x00byte",
		strings.Repeat("k", 4096), strings.Repeat("}", 4096),
	} {
		lock, fence := lockKeys(DefaultPrefix, key)
		tag := hashTag(lock)
		if tag == lock || tag == "" {
			t.Errorf("key %.20q: lock name %.40q has no hash tag", key, lock)
		}
		if hashTag(fence) != tag {
			t.Errorf("key %.20q: tags differ: %.20q %.20q", key, tag, hashTag(fence))
		}
		if fence[:len(lock)] != lock {
			t.Errorf("key %.20q: the fence name does not extend the lock name", key)
		}
	}
}

func TestKeysDistinct(t *testing.T) {
	seen := map[string]string{}
	for _, key := range []string{"a}", "a%7D", "a%257D", "a{", "a%7B", "a%", "a%25", "a"} {
		lock := LockKey(DefaultPrefix, key)
		if other, dup := seen[lock]; dup {
			t.Errorf("keys %q and %q share the lock name %q", key, other, lock)
		}
		seen[lock] = key
	}
	if got := LockKey(DefaultPrefix, "orders"); got != "mutexkit:{orders}" {
		t.Errorf("LockKey(orders) = %q; want mutexkit:{orders}", got)
	}
}

func TestQuorum(t *testing.T) {
	for n, want := range map[int]int{1: 1, 3: 2, 4: 3, 5: 3, 7: 4} {
		l := newLocker(&config{}, make([]*node, n))
		if l.quorum != want {
			t.Errorf("quorum of %d nodes = %d; want %d", n, l.quorum, want)
		}
	}
}

func TestDrift(t *testing.T) {
	cfg := defaultConfig()
	if got := cfg.drift(10 * 1e9); got != 100*1e6+2*1e6 {
		t.Errorf("drift of 10s = %v; want 102ms", got)
	}
}
