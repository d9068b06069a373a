package file

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Name is the URL scheme the driver registers, and its DriverName.
const Name = "file"

func init() { mutex.Register(Name, Driver{}) }

// Driver is the file driver. Its zero value is ready to use.
type Driver struct{}

// OpenConnector is NewConnector.
func (Driver) OpenConnector(dsn string) (driver.Connector, error) { return NewConnector(dsn) }

// NewConnector parses dsn with ParseDSN and returns a Connector for the
// directory it names. It does no I/O. The driver has no options: how often
// held keys are verified is the client's mutex.WithHeartbeat.
func NewConnector(dsn string) (driver.Connector, error) {
	dir, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	return FromDir(dir), nil
}

// FromDir returns a Connector that keeps lock files in dir, a path (not a
// DSN). A relative dir is resolved against the working directory when
// Connect is called. The directory is created on Connect if missing.
func FromDir(dir string) driver.Connector { return &connector{dir: dir} }

type connector struct {
	dir      string
	noNotify bool // tests: as where inotify is unavailable
}

func (c *connector) DriverName() string { return Name }

// Connect creates the directory (mode 0o755) if needed, refuses network
// filesystems (an error matching driver.ErrUnimplemented, and so
// errors.ErrUnsupported) and returns a Locker.
func (c *connector) Connect(ctx context.Context) (driver.Locker, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.dir == "" {
		return nil, fmt.Errorf("file: empty directory: %w", driver.ErrInvalid)
	}
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("file: create lock directory: %w", err)
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	return newLocker(dir, !c.noNotify), nil
}

// DefaultDir is the lock directory of an empty DSN: mutexkit-locks in the
// OS temporary directory (not "mutexkit", where the command's binary is
// often built).
func DefaultDir() string { return filepath.Join(os.TempDir(), "mutexkit-locks") }

// ParseDSN returns the lock directory a DSN names. A DSN is one of:
//
//   - "", "file:" or "file://": DefaultDir();
//   - a directory path, absolute or relative ("/var/lock/myapp");
//   - a file URL with an absolute path and no host other than localhost,
//     no query and no fragment ("file:///var/lock/myapp"); percent-escapes
//     are decoded.
//
// Anything else (another URL scheme, a NUL byte, a malformed file URL) is
// an error matching driver.ErrInvalid. Errors never quote the DSN.
func ParseDSN(dsn string) (dir string, err error) {
	if dsn == "" || strings.EqualFold(dsn, "file:") || strings.EqualFold(dsn, "file://") {
		return DefaultDir(), nil
	}
	if strings.IndexByte(dsn, 0) >= 0 {
		return "", invalidDSN("it contains a NUL byte")
	}
	scheme, isURL := urlScheme(dsn)
	if !isURL {
		return filepath.Clean(dsn), nil
	}
	if !strings.EqualFold(scheme, "file") {
		// Another driver's DSN, maybe with a password: name only the scheme.
		return "", invalidDSN(fmt.Sprintf("it has URL scheme %q", scheme))
	}
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Parse errors quote the whole input: drop them.
		return "", invalidDSN("it is a malformed file URL")
	}
	switch {
	case u.Opaque != "" || !strings.HasPrefix(u.Path, "/"):
		return "", invalidDSN("a file URL needs an absolute path")
	case u.User != nil:
		return "", invalidDSN("a file URL takes no user")
	case u.Host != "" && !strings.EqualFold(u.Host, "localhost"):
		return "", invalidDSN("a file URL names no host other than localhost: locks are host-local")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", invalidDSN("a file URL takes no query or fragment")
	case strings.IndexByte(u.Path, 0) >= 0:
		return "", invalidDSN("it contains a NUL byte")
	}
	return filepath.Clean(filepath.FromSlash(u.Path)), nil
}

func invalidDSN(why string) error {
	return fmt.Errorf("file: bad DSN: %s; want a directory path or file:///abs/dir: %w", why, driver.ErrInvalid)
}

// urlScheme reports whether s looks like a URL: "file:" anything, or
// "scheme://" with a scheme of two or more characters (so "C:/x" and
// "a:b" stay paths).
func urlScheme(s string) (scheme string, ok bool) {
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return "", false
	}
	scheme = s[:i]
	if strings.EqualFold(scheme, "file") {
		return scheme, true
	}
	if len(scheme) < 2 || !strings.HasPrefix(s[i:], "://") {
		return "", false
	}
	for j, r := range scheme {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case j > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return "", false
		}
	}
	return scheme, true
}
