// Package testserver reaches the real servers integration tests need:
// PostgreSQL at MUTEXKIT_POSTGRES_DSN and redis-server processes the tests
// start themselves, alone, as a Redis Cluster (StartRedisCluster) or as a
// master, a replica and sentinels (StartRedisSentinel). When a server cannot be had, a test skips with a message
// naming what to start, unless MUTEXKIT_REQUIRE_SERVICES=1 (set by make test
// and CI): then it fails.
package testserver

import (
	"os"
	"testing"
)

// RequireServices reports whether missing servers fail tests rather than
// skip them.
func RequireServices() bool { return os.Getenv("MUTEXKIT_REQUIRE_SERVICES") == "1" }

// Unavailable skips t, or fails it when services are required, saying what
// is missing and how to get it.
func Unavailable(t testing.TB, what, howToStart string) {
	t.Helper()
	if RequireServices() {
		t.Fatalf("%s is unavailable and MUTEXKIT_REQUIRE_SERVICES=1: %s", what, howToStart)
	}
	t.Skipf("%s is unavailable (%s); set MUTEXKIT_REQUIRE_SERVICES=1 to fail instead", what, howToStart)
}
