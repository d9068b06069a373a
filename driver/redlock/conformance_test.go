package redlock_test

import (
	"context"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/internal/testserver"
)

// TestConformance runs the suite on one node (fencing tokens) and on five
// (Redlock). The servers are shared by the cases; each case has a key
// prefix of its own.
func TestConformance(t *testing.T) {
	for _, n := range []int{1, 5} {
		t.Run(map[int]string{1: "1node", 5: "5nodes"}[n], func(t *testing.T) {
			servers := testserver.StartRedis(t, n)
			conformance.Run(t, func(_ context.Context, t *testing.T) (conformance.Harness, error) {
				return &harness{cluster: newCluster(t, servers)}, nil
			})
		})
	}
}

func (h *harness) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{
		Fencing:    len(h.servers) == 1,
		TTL:        true,
		LossWithin: 5 * time.Second,  // a renewal every third of the suite's 2s TTL finds it
		FreeWithin: 15 * time.Second, // Abandon's TTL is 1s
	}
}
