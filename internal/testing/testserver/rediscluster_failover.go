package testserver

import (
	"fmt"
	"sync"
	"time"
)

// Failover has a replica of master take over with CLUSTER FAILOVER (a
// manual failover: the master stops taking writes until the replica has
// them all, so nothing is lost; it cannot finish while the replica is
// paused), waits until the cluster is OK with the replica as master and
// master as its replica, and returns it.
func (c *RedisCluster) Failover(master *ClusterNode) *ClusterNode {
	c.t.Helper()
	replicas := c.replicasFor("Failover", master)
	r := replicas[0]
	var sent time.Time
	pollUntil(c.t, redisWaitTimeout, "manual failover to "+r.Addr(), func() error {
		if time.Since(sent) > 6*time.Second { // a manual failover gives up after 5 s: ask again
			if _, err := redisDo(r.addr, "CLUSTER", "FAILOVER"); err != nil {
				return err
			}
			sent = time.Now()
		}
		return c.promoted(r)
	})
	c.WaitOK()
	return r
}

// KillMaster kills master (SIGKILL), waits until one of its replicas has
// been elected in its place (after about cluster-node-timeout and an
// election) and the cluster is OK, and returns that replica. Writes the
// master acknowledged that the replica had not applied are lost (see
// PauseReplication). Restart the old master and WaitOK to have it back, as
// a replica.
func (c *RedisCluster) KillMaster(master *ClusterNode) *ClusterNode {
	c.t.Helper()
	replicas := c.replicasFor("KillMaster", master)
	master.Kill()
	var promoted *ClusterNode
	pollUntil(c.t, redisWaitTimeout, "a replica of "+master.Addr()+" takes over", func() error {
		var err error
		for _, r := range replicas {
			if err = c.promoted(r); err == nil {
				promoted = r
				return nil
			}
		}
		return err
	})
	c.WaitOK()
	return promoted
}

// promoted reports why n is not yet a master owning slots, or nil.
func (c *RedisCluster) promoted(n *ClusterNode) error {
	lines, err := clusterNodes(n.addr)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if l.is("myself") && l.is("master") && len(l.ownSlots()) > 0 {
			return nil
		}
	}
	return fmt.Errorf("%s is not a master owning slots yet", n.addr)
}

// clusterPauseMax bounds a PauseReplication left without resume.
const clusterPauseMax = time.Minute

// PauseReplication stops replica from applying what its master sends
// (CLIENT PAUSE WRITE on it: its link to the master is a client there, and
// waits), while it stays up, answers reads, and keeps its cluster bus, so
// that it can still be elected; WAIT on the master then counts it no more.
// A master killed meanwhile loses the writes it took since: KillMaster
// promotes a replica that never applied them. resume (also called when the
// test ends; the pause ends by itself after a minute) lifts the pause: the
// replica applies what it has received or, if it was promoted meanwhile,
// takes writes again (until then its writers wait).
func (c *RedisCluster) PauseReplication(replica *ClusterNode) (resume func()) {
	c.t.Helper()
	if !c.myself(replica).is("slave") {
		c.t.Fatalf("PauseReplication: %s is not a replica", replica.Addr())
	}
	c.must(replica, "CLIENT", "PAUSE", clusterPauseMax.Milliseconds(), "WRITE")
	var once sync.Once
	resume = func() {
		once.Do(func() {
			if replica.running() {
				redisDo(replica.addr, "CLIENT", "UNPAUSE")
			}
		})
	}
	c.t.Cleanup(resume)
	return resume
}
