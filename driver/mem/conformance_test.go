package mem_test

import (
	"testing"

	"github.com/mutexkit/mutexkit/conformance"
)

// TestConformance runs the suite on private tables: Vanish expires a grant
// silently (found by renewal), Abandon leaves one with a 1s TTL.
func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.MemHarness)
}
