package goredis_test

import (
	"context"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// TestConformance runs the suite through go-redis clients on one node
// (fencing tokens) and on three (Redlock), wait-queue cases included.
func TestConformance(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(map[int]string{1: "1node", 3: "3nodes"}[n], func(t *testing.T) {
			servers := testserver.StartRedis(t, n)
			conformance.Run(t, func(_ context.Context, t *testing.T) (conformance.Harness, error) {
				return &harness{nodes: newNodes(t, servers)}, nil
			})
		})
	}
}

func (h *harness) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{
		Fencing:    len(h.servers) == 1,
		TTL:        true,
		LossWithin: 5 * time.Second,
		FreeWithin: 15 * time.Second,
		Queue:      true,
	}
}
