package testserver

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// dialTest opens a redigo connection to addr, closed when t ends.
func dialTest(t *testing.T, addr string) redis.Conn {
	t.Helper()
	c, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(5*time.Second),
		redis.DialReadTimeout(5*time.Second), redis.DialWriteTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wantReply fails t unless cmd on c returns want (a string) or an error
// starting with want.
func wantReply(t *testing.T, c redis.Conn, want string, cmd string, args ...any) {
	t.Helper()
	reply, err := c.Do(cmd, args...)
	got := fmt.Sprint(reply)
	if err != nil {
		got = err.Error()
	} else if b, ok := reply.([]byte); ok {
		got = string(b)
	}
	if !strings.HasPrefix(got, want) {
		t.Errorf("%s %v: got %q, want %q", cmd, args, got, want)
	}
}

// setAndWait writes key=value on addr and waits until a replica has it.
func setAndWait(t *testing.T, addr, key, value string) {
	t.Helper()
	c := dialTest(t, addr)
	if _, err := c.Do("SET", key, value); err != nil {
		t.Fatal(err)
	}
	if n, err := redis.Int(c.Do("WAIT", 1, 5000)); err != nil || n != 1 {
		t.Fatalf("WAIT 1 on %s: %d, %v", addr, n, err)
	}
}

func TestRedisClusterMigrateSlot(t *testing.T) {
	start := time.Now()
	c := StartRedisCluster(t, 3, 1)
	t.Logf("3 masters and 3 replicas OK in %v", time.Since(start))

	nodes, masters := c.Nodes(), c.Masters()
	if len(nodes) != 6 || len(c.Addrs()) != 6 || !slices.Equal(masters, nodes[:3]) {
		t.Fatalf("%d nodes, masters %v; want 6 nodes, the first 3 masters", len(nodes), masters)
	}
	for i, m := range masters {
		if r := c.Replicas(m); len(r) != 1 || r[0] != nodes[3+i] {
			t.Errorf("master %d has replicas %v, want node %d", i, r, 3+i)
		}
		if len(m.ID) != 40 || c.Node(m.ID) != m {
			t.Errorf("master %d: id %q", i, m.ID)
		}
	}

	key, absent := "{mk}lock", "{mk}other"
	slot := c.KeySlot(key)
	from := c.SlotOwner(slot)
	to := masters[(slices.Index(masters, from)+1)%3]
	setAndWait(t, from.Addr(), key, "v")

	src, dst := dialTest(t, from.Addr()), dialTest(t, to.Addr())
	ask := fmt.Sprintf("ASK %d %s", slot, to.Addr())
	var steps []MigrationStep
	start = time.Now()
	c.MigrateSlot(slot, to, func(s MigrationStep) {
		steps = append(steps, s)
		switch s {
		case MigrationImporting:
			wantReply(t, src, "v", "GET", key)
			wantReply(t, dst, "MOVED", "GET", key)
		case MigrationMigrating:
			wantReply(t, src, "v", "GET", key)
			wantReply(t, src, ask, "GET", absent)
		case MigrationKeysMoved:
			wantReply(t, src, ask, "GET", key)
			wantReply(t, dst, fmt.Sprintf("MOVED %d %s", slot, from.Addr()), "GET", key)
			wantReply(t, dst, "OK", "ASKING")
			wantReply(t, dst, "v", "GET", key)
		}
	})
	t.Logf("slot %d moved in %v", slot, time.Since(start))
	if want := []MigrationStep{MigrationImporting, MigrationMigrating, MigrationKeysMoved}; !slices.Equal(steps, want) {
		t.Errorf("hook called with %v, want %v", steps, want)
	}
	if got := c.SlotOwner(slot); got != to {
		t.Errorf("slot %d owned by %s after the migration, want %s", slot, got.Addr(), to.Addr())
	}
	wantReply(t, src, fmt.Sprintf("MOVED %d %s", slot, to.Addr()), "GET", key)
	wantReply(t, dst, "v", "GET", key)
	c.WaitOK()
}

func TestRedisClusterFailover(t *testing.T) {
	c := StartRedisCluster(t, 3, 1)
	key := "lock"
	m := c.SlotOwner(c.KeySlot(key))
	r := c.Replicas(m)[0]
	setAndWait(t, m.Addr(), key, "v1")

	start := time.Now()
	if got := c.Failover(m); got != r {
		t.Fatalf("Failover promoted %s, want %s", got.Addr(), r.Addr())
	}
	t.Logf("manual failover in %v", time.Since(start))
	if got := c.Replicas(r); len(got) != 1 || got[0] != m {
		t.Errorf("after the manual failover, %s has replicas %v, want the old master", r.Addr(), got)
	}
	wantReply(t, dialTest(t, r.Addr()), "v1", "GET", key)

	setAndWait(t, r.Addr(), key, "v2")
	start = time.Now()
	if got := c.KillMaster(r); got != m {
		t.Fatalf("KillMaster promoted %s, want %s", got.Addr(), m.Addr())
	}
	t.Logf("failover of a killed master in %v", time.Since(start))
	if slices.Contains(c.Masters(), r) || len(c.Masters()) != 3 {
		t.Errorf("masters after the kill: %v", c.Masters())
	}
	wantReply(t, dialTest(t, m.Addr()), "v2", "GET", key)

	start = time.Now()
	r.Restart()
	c.WaitOK()
	t.Logf("killed master back as a replica in %v", time.Since(start))
	if got := c.Replicas(m); len(got) != 1 || got[0] != r {
		t.Errorf("after the restart, %s has replicas %v, want the restarted node", m.Addr(), got)
	}
	rc := dialTest(t, r.Addr())
	wantReply(t, rc, "OK", "READONLY")
	wantReply(t, rc, "v2", "GET", key) // WaitOK: in sync with its master

	// A write the master took while its replica was paused dies with it.
	resume := c.PauseReplication(r)
	mc := dialTest(t, m.Addr())
	wantReply(t, mc, "OK", "SET", key, "v3")
	if n, err := redis.Int(mc.Do("WAIT", 1, 300)); err != nil || n != 0 {
		t.Errorf("WAIT 1 with replication paused: %d replicas, %v; want 0", n, err)
	}
	start = time.Now()
	if got := c.KillMaster(m); got != r {
		t.Fatalf("KillMaster promoted %s, want %s", got.Addr(), r.Addr())
	}
	t.Logf("failover with replication paused in %v", time.Since(start))
	wantReply(t, rc, "v2", "GET", key)
	resume()
	wantReply(t, rc, "OK", "SET", key, "v4")
}
