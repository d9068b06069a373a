package driver

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// The registry lives here rather than in package mutex so that a driver can
// register itself in init without importing mutex (drivers depend only on
// this package). mutex.Register, mutex.Drivers and mutex.Open use it.
var (
	registryMu sync.RWMutex
	registry   = make(map[string]Driver)
)

// Register makes a driver available under name. It panics if d is nil, if
// name is empty, or if name is already registered, since each is a
// programming error found at init.
func Register(name string, d Driver) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if d == nil {
		panic("mutexkit: Register driver is nil")
	}
	if name == "" {
		panic("mutexkit: Register called with an empty driver name")
	}
	if _, dup := registry[name]; dup {
		panic("mutexkit: Register called twice for driver " + name)
	}
	registry[name] = d
}

// Lookup returns the driver registered under name. The error, when there is
// none, names the known drivers.
func Lookup(name string) (Driver, error) {
	registryMu.RLock()
	d, ok := registry[name]
	registryMu.RUnlock()
	if !ok {
		known := strings.Join(Drivers(), ", ")
		if known == "" {
			known = "none"
		}
		return nil, unknownDriverError(fmt.Sprintf("unknown driver %q (forgotten import?); registered: %s", name, known))
	}
	return d, nil
}

// unknownDriverError matches ErrInvalid without saying so in its text.
type unknownDriverError string

func (e unknownDriverError) Error() string        { return string(e) }
func (e unknownDriverError) Is(target error) bool { return target == ErrInvalid }

// Drivers returns the names of the registered drivers, sorted.
func Drivers() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for name := range registry {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
