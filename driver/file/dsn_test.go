package file_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
)

func TestParseDSN(t *testing.T) {
	for _, tc := range []struct{ dsn, dir string }{
		{"", filepath.Join(os.TempDir(), "mutexkit-locks")},
		{"file:", filepath.Join(os.TempDir(), "mutexkit-locks")},
		{"file://", filepath.Join(os.TempDir(), "mutexkit-locks")},
		{"/var/lock/app", "/var/lock/app"},
		{"/var/lock/app/", "/var/lock/app"},
		{"relative/dir", "relative/dir"},
		{"./x/../y", "y"},
		{"file:///var/lock/app", "/var/lock/app"},
		{"FILE:///var/lock/app", "/var/lock/app"},
		{"file://localhost/var/lock/app", "/var/lock/app"},
		{"file:/var/lock/app", "/var/lock/app"},
		{"file:///var/lock/my%20app", "/var/lock/my app"},
		{"C:/locks", "C:/locks"},
		{"a:b", "a:b"},
	} {
		dir, err := file.ParseDSN(tc.dsn)
		if err != nil || dir != tc.dir {
			t.Errorf("ParseDSN(%q) = %q, %v; want %q", tc.dsn, dir, err, tc.dir)
		}
	}
}

func TestParseDSNInvalid(t *testing.T) {
	for _, dsn := range []string{
		"file:relative",
		"file://otherhost/var/lock",
		"file:///var/lock?mode=x",
		"file:///var/lock#frag",
		"file://user:s3cret@localhost/var/lock",
		"file:///var/%zz",
		"file:///var/lock%00x",
		"/var/lock\x00x",
		"postgres://user:s3cret@db/app",
		"redis://:s3cret@127.0.0.1:6379",
	} {
		dir, err := file.ParseDSN(dsn)
		if !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("ParseDSN(%q) = %q, %v; want an error matching ErrInvalid", dsn, dir, err)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseDSN(%q): error %q shows the password", dsn, err)
		}
		if _, err := (file.Driver{}).OpenConnector(dsn); !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("OpenConnector(%q) = %v; want ErrInvalid", dsn, err)
		}
	}
}

func TestOpenConnector(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	var d driver.Driver = file.Driver{}
	c, err := d.OpenConnector("file://" + dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.DriverName() != file.Name || file.Name != "file" {
		t.Fatalf("DriverName() = %q", c.DriverName())
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenConnector did I/O: stat %s: %v", dir, err)
	}
	l, err := c.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("Connect did not create %s: %v", dir, err)
	}
	if err := l.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}
