package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
)

// MemHarness is a HarnessMaker for the mem driver: each case gets a private
// table, whose connectors act as two nodes of one backend. It certifies
// what runs over any driver, middleware above all, without a server:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, conformance.MemHarness, mutex.WithMiddleware(m))
//	}
func MemHarness(context.Context, *testing.T) (Harness, error) {
	return memHarness{mem.NewTable()}, nil
}

type memHarness struct{ table *mem.Table }

func (h memHarness) NewConnector(context.Context) (driver.Connector, error) {
	return mem.FromTable(h.table), nil
}

// Vanish expires the grant silently, as a Redis node restarted empty would:
// the holder must find out by renewing.
func (h memHarness) Vanish(_ context.Context, key string) error {
	h.table.Expire(key)
	return nil
}

// Abandon takes key with a one-second TTL and never renews or releases it.
func (h memHarness) Abandon(ctx context.Context, key string) error {
	l, err := mem.FromTable(h.table).Connect(ctx)
	if err != nil {
		return err
	}
	_, err = l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), TTL: time.Second})
	return err
}

func (memHarness) Capabilities() Capabilities {
	return Capabilities{Fencing: true, TTL: true, Queue: true, LossWithin: 5 * time.Second, FreeWithin: 10 * time.Second}
}

// RestartEmpty forgets every grant and queue of the table at once.
func (h memHarness) RestartEmpty(context.Context) error {
	h.table.RestartEmpty()
	return nil
}

func (memHarness) Close() error { return nil }
