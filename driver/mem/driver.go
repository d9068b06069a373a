package mem

import (
	"context"
	"fmt"
	"strings"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/mutex"
)

// Name is the URL scheme the driver registers, and its DriverName.
const Name = "mem"

func init() { mutex.Register(Name, Driver{}) }

// Driver opens connectors to named tables. Its zero value is ready to use.
type Driver struct{}

// OpenConnector is NewConnector.
func (Driver) OpenConnector(dsn string) (driver.Connector, error) { return NewConnector(dsn) }

// NewConnector returns a Connector to the table a DSN names: "mem://name"
// (or "mem:name"); "mem:" and "mem://" name the default table. The name
// is taken as written, without unescaping. The driver has no options.
func NewConnector(dsn string) (driver.Connector, error) {
	scheme, rest, ok := strings.Cut(dsn, ":")
	if !ok || !strings.EqualFold(scheme, Name) {
		return nil, fmt.Errorf("mem: a DSN is mem://name: %w", driver.ErrInvalid)
	}
	return FromTable(Named(strings.TrimPrefix(rest, "//"))), nil
}

// FromTable returns a Connector to t, a table the program made (NewTable)
// or looked up (Named).
func FromTable(t *Table) driver.Connector { return connector{t} }

type connector struct{ t *Table }

func (c connector) DriverName() string { return Name }

// Connect returns a new Locker on the table; it never fails.
func (c connector) Connect(context.Context) (driver.Locker, error) {
	return &locker{t: c.t, held: make(map[string]driver.Owner)}, nil
}
