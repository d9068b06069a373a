package redlock

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
)

// TestDSNUserInfo: the user info ends at the last '@' before the first
// '/', '?' or '#' (RFC 3986), so an '@' in the database part or an option
// value never turns the text before it into a password, nor what follows
// it into the host list.
func TestDSNUserInfo(t *testing.T) {
	for _, tc := range []struct {
		dsn            string
		user, password string
		addrs          []string
		db             int
		prefix         string
	}{
		{dsn: "redis://:s3cret@127.0.0.1:6379?prefix=team@127.0.0.1:7000",
			password: "s3cret", addrs: []string{"127.0.0.1:6379"}, prefix: "team@127.0.0.1:7000"},
		{dsn: "redis://u:s3cret@a:1,b:2,c:3?prefix=team@d:4",
			user: "u", password: "s3cret", addrs: []string{"a:1", "b:2", "c:3"}, prefix: "team@d:4"},
		{dsn: "rediss://u:s3cret@a:1,b:2,c:3/4?prefix=x@y&tls_server_name=r",
			user: "u", password: "s3cret", addrs: []string{"a:1", "b:2", "c:3"}, db: 4, prefix: "x@y"},
		{dsn: "redis://127.0.0.1:6379?prefix=team@127.0.0.1:7000",
			addrs: []string{"127.0.0.1:6379"}, prefix: "team@127.0.0.1:7000"},
		{dsn: "redis://:p@ss@h:1", password: "p@ss", addrs: []string{"h:1"}, prefix: DefaultPrefix},
		{dsn: "redis://:p%2Fa%3Fs%23s%40@h:1,i:2,j:3/1", password: "p/a?s#s@", addrs: []string{"h:1", "i:2", "j:3"}, db: 1, prefix: DefaultPrefix},
		{dsn: "redis://@h:1", addrs: []string{"h:1"}, prefix: DefaultPrefix},
	} {
		cfg, err := parseDSN(tc.dsn)
		if err != nil {
			t.Errorf("parseDSN(%q): %v", tc.dsn, err)
			continue
		}
		if cfg.user != tc.user || cfg.password != tc.password || !slices.Equal(cfg.addrs, tc.addrs) || cfg.db != tc.db || cfg.prefix != tc.prefix {
			t.Errorf("parseDSN(%q) = user %q, password %q, nodes %q, db %d, prefix %q; want %q, %q, %q, %d, %q",
				tc.dsn, cfg.user, cfg.password, cfg.addrs, cfg.db, cfg.prefix, tc.user, tc.password, tc.addrs, tc.db, tc.prefix)
		}
	}
}

// TestDSNUnescapedPassword: a password with an unescaped '/', '?' or '#'
// is cut there, so the DSN fails; the error quotes none of its pieces.
func TestDSNUnescapedPassword(t *testing.T) {
	for _, tc := range []struct{ dsn, piece string }{
		{"redis://:p@Qz/Wv?Xk@h:1", "Wv"},
		{"redis://:Qz/Wv@h:1", "Wv"},
		{"redis://admin:1234/5678@h:1", "5678"},
		{"redis://admin:1234?Xkyzzy@h:1", "Xkyzzy"},
		{"redis://admin:1234#Xkyzzy@h:1", "Xkyzzy"},
		{"redis://:1234?prefix=Xkyzzy@h:1,i:2,j:3", "Xkyzzy"},
	} {
		_, err := parseDSN(tc.dsn)
		if !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("parseDSN(%q): %v; want ErrInvalid", tc.dsn, err)
			continue
		}
		if strings.Contains(err.Error(), tc.piece) {
			t.Errorf("parseDSN(%q): %v: quotes %q", tc.dsn, err, tc.piece)
		}
		if !strings.Contains(err.Error(), "%2F") {
			t.Errorf("parseDSN(%q): %v; want a hint to escape", tc.dsn, err)
		}
	}
}
