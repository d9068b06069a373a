package mutex

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/mutexkit/mutexkit/driver"
)

// The registry maps URL schemes to drivers: the one piece of global state
// besides the mem driver's named tables.
var (
	registryMu sync.RWMutex
	registry   = make(map[string]driver.Driver)
)

// Register makes d open the DSNs of URL scheme for Open. Drivers call it
// from init, once for each scheme they serve ("postgres" and "postgresql",
// "redis" and "rediss"). It panics if d is nil, if scheme is not a valid
// lower-case URL scheme, or if scheme is taken, since each is a programming
// error found at init.
func Register(scheme string, d driver.Driver) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if d == nil {
		panic("mutex: Register driver is nil")
	}
	if !validScheme(scheme) {
		panic(fmt.Sprintf("mutex: Register called with scheme %q: want a lower-case URL scheme such as \"postgres\"", scheme))
	}
	if _, dup := registry[scheme]; dup {
		panic("mutex: Register called twice for scheme " + scheme)
	}
	registry[scheme] = d
}

// Schemes returns the registered URL schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	schemes := make([]string, 0, len(registry))
	for s := range registry {
		schemes = append(schemes, s)
	}
	slices.Sort(schemes)
	return schemes
}

// Open returns a Client for the backend a DSN names. The DSN is a URL
// whose scheme picks the driver, registered by importing it:
//
//	import _ "github.com/mutexkit/mutexkit/driver/postgres"
//
//	client, err := mutex.Open("postgres://app@db/app?sslmode=require")
//
// Like sql.Open it only parses: nothing is reached until the first
// operation, and Ping checks for real. A DSN of no registered scheme, or a
// malformed one, gives an error matching ErrInvalid that never quotes a
// password. A DSN that is not a URL (a libpq keyword string) goes to the
// driver's own NewConnector, and the Connector to NewClient.
func Open(dsn string, opts ...Option) (*Client, error) {
	scheme, ok := urlScheme(dsn)
	if !ok {
		return nil, opError("open", "", fmt.Errorf("the DSN is not a URL (want scheme://...; registered schemes: %s): %w", knownSchemes(), ErrInvalid))
	}
	registryMu.RLock()
	d := registry[scheme]
	registryMu.RUnlock()
	if d == nil {
		return nil, opError("open", "", fmt.Errorf("unknown DSN scheme %q (forgotten import of its driver?); registered: %s: %w", scheme, knownSchemes(), ErrInvalid))
	}
	conn, err := d.OpenConnector(dsn)
	if err != nil {
		return nil, opError("open", "", err)
	}
	return NewClient(conn, opts...), nil
}

func knownSchemes() string {
	s := Schemes()
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// urlScheme returns the lower-cased scheme of a URL (RFC 3986: a letter,
// then letters, digits, "+", "-" or ".", then ":"). It never parses more,
// so it cannot quote a password in an error.
func urlScheme(dsn string) (string, bool) {
	i := strings.IndexByte(dsn, ':')
	if i <= 0 || !validScheme(strings.ToLower(dsn[:i])) {
		return "", false
	}
	return strings.ToLower(dsn[:i]), true
}

func validScheme(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '+' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}
