package file_test

import (
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
)

// FuzzParseDSN: any text parses to a clean directory without NUL bytes or
// fails with ErrInvalid, never panics; a parsed absolute directory
// round-trips through a file URL.
func FuzzParseDSN(f *testing.F) {
	for _, s := range []string{
		"", "/var/lock/app", "relative/dir", "./x/../y", "file:///var/lock/app", "FILE:///a", "file://localhost/x",
		"file:/x", "file:///my%20app", "C:/locks", "a:b", "file:relative", "file://", "file://h/x", "file:///x?q",
		"file:///x#f", "file://u:s3cret@localhost/x", "file:///%zz", "file:///a%00b", "/a\x00b", "redis://:pw@h:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dsn string) {
		dir, err := file.ParseDSN(dsn)
		if err != nil {
			if !errors.Is(err, driver.ErrInvalid) {
				t.Fatalf("ParseDSN(%q): %v; want ErrInvalid", dsn, err)
			}
			return
		}
		if dir == "" || filepath.Clean(dir) != dir || strings.IndexByte(dir, 0) >= 0 {
			t.Fatalf("ParseDSN(%q) = %q: not a clean directory", dsn, dir)
		}
		if filepath.IsAbs(dir) {
			u := url.URL{Scheme: "file", Path: dir}
			if back, err := file.ParseDSN(u.String()); err != nil || back != dir {
				t.Fatalf("ParseDSN(%q) = %q, %v; want %q back", u.String(), back, err, dir)
			}
		}
	})
}

// FuzzParseDSNPassword: a DSN of any scheme with a password in its user
// info is refused (or read as a path) without quoting the password.
func FuzzParseDSNPassword(f *testing.F) {
	f.Add("file", "s3cr3t-P4ss", "localhost/var/lock")
	f.Add("redis", "s3cr3t-P4ss", "127.0.0.1:6379")
	f.Add("postgres", "p@ss/wo?rd", "db/app")
	f.Fuzz(func(t *testing.T, scheme, password, rest string) {
		dsn := scheme + "://" + url.UserPassword("u", password).String() + "@" + rest
		_, err := file.ParseDSN(dsn)
		if err != nil && len(password) >= 4 && !strings.Contains(scheme+rest, password) && strings.Contains(err.Error(), password) {
			t.Fatalf("ParseDSN error quotes the password %q: %v", password, err)
		}
	})
}
