package postgres

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
)

// leaks reports whether msg carries password, in any of the forms a DSN
// may hold it, where it could not have come from the rest of the DSN.
func leaks(msg, password, rest string) bool {
	if len(password) < 4 {
		return false // too short to tell from chance
	}
	for _, form := range []string{password, url.QueryEscape(password), url.PathEscape(password)} {
		if strings.Contains(msg, form) && !strings.Contains(rest, form) {
			return true
		}
	}
	return false
}

// FuzzParseDSNURL: a URL DSN with a password in its user info or its query
// parses or fails with ErrInvalid, never panics, never quotes the password,
// and a parsed password round-trips.
func FuzzParseDSNURL(f *testing.F) {
	for _, s := range [][3]string{
		{"postgres", "s3cr3t-P4ss", "127.0.0.1:5432/app?sslmode=disable"},
		{"u", "p@ss/wo?rd", "h/db?mutexkit_namespace=x&mutexkit_max_keys=9"},
		{"u", "secret%zz", "h/db"},
		{"u", "secretsecret", "h:99999/db"},
		{"u", "secretsecret", "h/db?mutexkit_statement_timeout=secretsecret"},
		{"u", "secretsecret", "h/db?sslmode=bogus"},
		{"u", "secretsecret", "h"},
		{"u", "secretsecret", "[::1/db"},
		{"u", "secretsecret", "h/db?mutexkit_bogus=1"},
	} {
		f.Add(s[0], s[1], s[2], false)
		f.Add(s[0], s[1], s[2], true)
	}
	f.Fuzz(func(t *testing.T, user, password, rest string, inQuery bool) {
		dsn := "postgres://" + url.UserPassword(user, password).String() + "@" + rest
		if inQuery {
			sep := "?"
			if strings.Contains(rest, "?") {
				sep = "&"
			}
			dsn = "postgres://" + url.User(user).String() + "@" + rest + sep + "password=" + url.QueryEscape(password)
		}
		cfg := defaultConfig()
		info, err := parseDSN(dsn, &cfg)
		if err != nil {
			if !errors.Is(err, driver.ErrInvalid) {
				t.Fatalf("parseDSN: %v; want ErrInvalid", err)
			}
			if leaks(err.Error(), password, user+rest) {
				t.Fatalf("error quotes the password %q: %v", password, err)
			}
			return
		}
		// After a "#" comes the fragment, which holds no parameters.
		if password != "" && info.password != password && !strings.Contains(rest, "password=") && !(inQuery && strings.Contains(rest, "#")) {
			t.Fatalf("password %q parsed as %q", password, info.password)
		}
		if info.pq.Database == "" {
			t.Fatal("accepted a DSN with no database")
		}
		for k := range info.pq.Runtime {
			if strings.HasPrefix(k, paramPrefix) {
				t.Fatalf("this driver's parameter %q reaches the server", k)
			}
		}
	})
}

// FuzzParseDSNKeywords: a keyword DSN parses or fails with ErrInvalid and
// never quotes the password, wherever the password stands; one that comes
// first is parsed as it was written (what follows it, however misquoted,
// cannot reach back into it).
func FuzzParseDSNKeywords(f *testing.F) {
	for _, s := range [][2]string{
		{"host=127.0.0.1 dbname=app", "s3cr3t-P4ss"},
		{"host=h dbname=db mutexkit_statement_timeout=1s", `it's\a secret`},
		{"host=h dbname= x=y", "secretsecret"},
		{"host=h dbname=db secretsecret", "secretsecret"},
		{"host=h", "secretsecret"},
		{"host=h dbname=db port=notaport", "secretsecret"},
		{"host=h dbname='unterminated", "secretsecret"},
		{"host=h dbname=db =x", "secretsecret"},
		{"host=h dbname=", "secretsecret"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, rest, password string) {
		quoted := "password='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(password) + "'"
		for _, last := range []bool{true, false} {
			dsn := rest + " " + quoted
			if !last {
				dsn = quoted + " " + rest
			}
			cfg := defaultConfig()
			info, err := parseDSN(dsn, &cfg)
			if err != nil {
				if !errors.Is(err, driver.ErrInvalid) {
					t.Fatalf("parseDSN: %v; want ErrInvalid", err)
				}
				if leaks(err.Error(), password, rest) {
					t.Fatalf("error quotes the password %q: %v", password, err)
				}
				continue
			}
			if !last && !strings.Contains(rest, "password") && info.password != password {
				t.Fatalf("password %q, written first, parsed as %q", password, info.password)
			}
		}
	})
}

// FuzzKeyID: the id is stable, LockTag splits it losslessly, and moving a
// byte between namespace and key changes it.
func FuzzKeyID(f *testing.F) {
	f.Add("", "nightly-report")
	f.Add("billing", "ключ-🔒")
	f.Add("a", "bc")
	f.Fuzz(func(t *testing.T, ns, key string) {
		id := KeyID(ns, key)
		if KeyID(ns, key) != id {
			t.Fatal("KeyID is not deterministic")
		}
		hi, lo := LockTag(id)
		if int64(uint64(hi)<<32|uint64(lo)) != id {
			t.Fatalf("LockTag(%d) = %d, %d does not recombine", id, hi, lo)
		}
		if key != "" && KeyID(ns+key[:1], key[1:]) == id {
			t.Fatalf("(%q, %q) and (%q, %q) share an id", ns, key, ns+key[:1], key[1:])
		}
	})
}
