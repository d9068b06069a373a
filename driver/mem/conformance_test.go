package mem_test

import (
	"context"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, newHarness)
}

// harness gives each case a private table; connectors to it act as two
// nodes of one backend.
type harness struct{ table *mem.Table }

func newHarness(context.Context, *testing.T) (conformance.Harness, error) {
	return harness{mem.NewTable()}, nil
}

func (h harness) NewConnector(context.Context) (driver.Connector, error) {
	return mem.NewConnector(h.table), nil
}

// Vanish expires the grant silently, as a Redis node restarted empty would:
// the holder must find out by renewing.
func (h harness) Vanish(_ context.Context, key string) error {
	h.table.Expire(key)
	return nil
}

// Abandon takes key with a one-second TTL and never renews or releases it.
func (h harness) Abandon(ctx context.Context, key string) error {
	l, err := mem.NewConnector(h.table).Connect(ctx)
	if err != nil {
		return err
	}
	_, err = l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), TTL: time.Second})
	return err
}

func (harness) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{Fencing: true, TTL: true, LossWithin: 5 * time.Second, FreeWithin: 10 * time.Second}
}

func (harness) Close() error { return nil }
