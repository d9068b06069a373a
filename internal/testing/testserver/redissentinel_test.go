package testserver

import (
	"slices"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

func startSentinel(t *testing.T) *RedisSentinel {
	start := time.Now()
	r := StartRedisSentinel(t)
	t.Logf("master, replica and 3 sentinels ready in %v", time.Since(start))
	if addrs := r.SentinelAddrs(); len(addrs) != 3 || len(r.Sentinels()) != 3 || r.MasterName() != SentinelMasterName {
		t.Fatalf("sentinels %v, master name %q", addrs, r.MasterName())
	}
	if m := r.Master(); m.Addr() != r.MasterAddr() || r.Replica() == m {
		t.Fatalf("master %s, replica %s, sentinels name %s", m.Addr(), r.Replica().Addr(), r.MasterAddr())
	}
	return r
}

// A write WAIT saw on the replica survives a failover; one made while
// replication was paused does not reach the replica until it resumes.
func TestRedisSentinelFailover(t *testing.T) {
	r := startSentinel(t)
	old, replica := r.Master(), r.Replica()
	c := dialTest(t, old.Addr())

	resume := r.PauseReplication()
	if _, err := c.Do("SET", "lock", "v"); err != nil {
		t.Fatal(err)
	}
	if n, err := redis.Int(c.Do("WAIT", 1, 300)); err != nil || n != 0 {
		t.Errorf("WAIT 1 with replication paused: %d replicas, %v; want 0", n, err)
	}
	rc := dialTest(t, replica.Addr())
	wantReply(t, rc, "<nil>", "GET", "lock")
	resume()
	if n, err := redis.Int(c.Do("WAIT", 1, 5000)); err != nil || n != 1 {
		t.Fatalf("WAIT 1 after resume: %d replicas, %v; want 1", n, err)
	}
	wantReply(t, rc, "v", "GET", "lock")

	start := time.Now()
	if got := r.KillMaster(); got != replica {
		t.Fatalf("KillMaster promoted %s, want %s", got.Addr(), replica.Addr())
	}
	t.Logf("failover in %v", time.Since(start))
	if r.MasterAddr() != replica.Addr() || r.Master() != replica {
		t.Errorf("sentinels name %s master, want %s", r.MasterAddr(), replica.Addr())
	}
	wantReply(t, dialTest(t, replica.Addr()), "v", "GET", "lock")
}

// A write the master acknowledged while replication was paused is lost
// when it fails: the promoted replica never had it.
func TestRedisSentinelPausedWriteLost(t *testing.T) {
	r := startSentinel(t)
	replica := r.Replica()
	r.PauseReplication() // resumed when the test ends
	wantReply(t, dialTest(t, r.Master().Addr()), "OK", "SET", "lock", "v")

	start := time.Now()
	next := r.KillMaster()
	t.Logf("failover with replication paused in %v", time.Since(start))
	if next != replica {
		t.Fatalf("KillMaster promoted %s, want %s", next.Addr(), replica.Addr())
	}
	nc := dialTest(t, next.Addr())
	wantReply(t, nc, "<nil>", "GET", "lock")
	wantReply(t, nc, "OK", "SET", "lock", "w") // the new master takes writes
	if !slices.Contains(r.SentinelAddrs(), r.Sentinels()[0].Addr()) {
		t.Error("Sentinels and SentinelAddrs disagree")
	}
}
