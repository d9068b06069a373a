package redlock

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
)

// FuzzParseDSN: any DSN parses or fails with ErrInvalid, never panics, and
// an error never carries the password; a parsed password round-trips, and
// no address keeps credentials or comes from after the host list (whatever
// '@' the database or options hold).
func FuzzParseDSN(f *testing.F) {
	for _, s := range [][3]string{
		{"", "s3cr3t-P4ss", "127.0.0.1:6379"},
		{"user", "p@ss/wo?rd", "a:1,b:2,c:3/2?timeout=50ms&prefix=app"},
		{"", "pw%zz", "h:1"},
		{"u", "pw", "[::1]:6379,[::1]:6380,[::1]:6381?drift_factor=0.02"},
		{"", "{x}", "h:1?prefix={x}"},
		{"", "secretsecret", "h:99999"},
		{"", "secretsecret", "h:1?bogus=secretsecret"},
		{"", "", "rediss-only?tls_ca=/x"},
		{"", "pw", "h:1/db"},
		{"", "s3cret", "127.0.0.1:6379?prefix=team@127.0.0.1:7000"},
		{"u", "s3cret", "a:1,b:2,c:3/1?prefix=team@d:4"},
		{"", "p/w?x#y@z", "h:1#frag@h:2"},
		{"", "pw", "h:1/2@h:3"},
	} {
		f.Add(s[0], s[1], s[2], false)
		f.Add(s[0], s[1], s[2], true)
	}
	f.Fuzz(func(t *testing.T, user, password, rest string, tls bool) {
		scheme := "redis://"
		if tls {
			scheme = "rediss://"
		}
		dsn := scheme + url.UserPassword(user, password).String() + "@" + rest
		cfg, err := parseDSN(dsn)
		if err != nil {
			if !errors.Is(err, driver.ErrInvalid) {
				t.Fatalf("parseDSN: %v; want ErrInvalid", err)
			}
			// The password may also appear in the rest of the DSN, or be so
			// short it appears by chance: check only where it cannot.
			if len(password) >= 4 && !strings.Contains(rest+user+"redis:// /?", password) &&
				strings.Contains(err.Error(), password) {
				t.Fatalf("error quotes the password %q: %v", password, err)
			}
			return
		}
		hosts, _, _ := strings.Cut(strings.NewReplacer("?", "/", "#", "/").Replace(rest), "/")
		if strings.Contains(hosts, "@") {
			return // the last '@' of the host list ends the user info, so part of it was read as the password
		}
		if cfg.password != password {
			t.Fatalf("password %q parsed as %q", password, cfg.password)
		}
		if cfg.user != user {
			t.Fatalf("user %q parsed as %q", user, cfg.user)
		}
		if cfg.useTLS != tls {
			t.Fatalf("TLS %v parsed as %v", tls, cfg.useTLS)
		}
		if n := len(cfg.addrs); n == 0 || n == 2 || n != strings.Count(hosts, ",")+1 {
			t.Fatalf("%d nodes accepted from the host list %q", n, hosts)
		}
		for _, a := range cfg.addrs {
			if strings.Contains(a, "@") || (len(password) >= 4 && strings.Contains(a, password) && !strings.Contains(rest, password)) {
				t.Fatalf("address %q carries credentials", a)
			}
		}
	})
}

// FuzzParseDSNRaw: arbitrary text never panics, and errors match ErrInvalid.
func FuzzParseDSNRaw(f *testing.F) {
	for _, s := range []string{"", "redis://", "rediss://@", "redis://:@:", "redis://h:1,,", "redis://[", "redis://a?%", "redis://h:1/-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dsn string) {
		if _, err := parseDSN(dsn); err != nil && !errors.Is(err, driver.ErrInvalid) {
			t.Fatalf("parseDSN(%q): %v; want ErrInvalid", dsn, err)
		}
	})
}

// FuzzLockKeys: a key's two Redis keys share one non-empty hash tag (one
// Cluster slot), the tag decodes back to the key, and distinct keys get
// distinct lock names.
func FuzzLockKeys(f *testing.F) {
	for _, s := range []string{"orders", "}", "{", "{}", "}x{", "a{b}c", "%7D", "%", "ключ-🔒", "nul\x00byte", "a%257D"} {
		f.Add(s, s+"}")
	}
	f.Fuzz(func(t *testing.T, key, other string) {
		if key == "" {
			return // package mutex refuses empty keys
		}
		lock, fence := lockKeys(DefaultPrefix, key)
		tag := hashTag(lock)
		if tag == lock || tag == "" {
			t.Fatalf("key %q: lock name %q has no hash tag", key, lock)
		}
		if hashTag(fence) != tag {
			t.Fatalf("key %q: tags differ: %q %q", key, tag, hashTag(fence))
		}
		if unescape(tag) != key {
			t.Fatalf("key %q: tag %q decodes to %q", key, tag, unescape(tag))
		}
		if key != other && LockKey(DefaultPrefix, other) == lock {
			t.Fatalf("keys %q and %q share the lock name %q", key, other, lock)
		}
	})
}

// unescape reverses escapeKey.
func unescape(s string) string {
	return strings.NewReplacer("%25", "%", "%7B", "{", "%7D", "}").Replace(s)
}
