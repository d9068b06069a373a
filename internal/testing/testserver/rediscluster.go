package testserver

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

const (
	// clusterSlots is the number of hash slots of a Redis Cluster.
	clusterSlots = 16384
	// clusterNodeTimeout is the nodes' cluster-node-timeout: a master that
	// stops answering is failed over about this long later, plus an
	// election (about a second more).
	clusterNodeTimeout = time.Second
)

// RedisCluster is a Redis Cluster a test started: cluster-enabled
// redis-server processes on free loopback ports, each in a temporary
// directory, killed when the test ends (MUTEXKIT_REDIS_ADDRS plays no
// part). Its methods fail the test when the cluster does not get where they
// wait for within 30 s; call them from the test's goroutine.
type RedisCluster struct {
	t     testing.TB
	nodes []*ClusterNode
}

// ClusterNode is one node of a RedisCluster. The embedded Redis kills,
// pauses and restarts it; a restarted node keeps its ID and rejoins (its
// nodes.conf stays in its directory) but comes back empty: call WaitOK
// after a Restart.
type ClusterNode struct {
	*Redis
	// ID is the node's cluster node id.
	ID string

	bus int // the cluster bus port
}

// StartRedisCluster starts masters masters, each with replicasPerMaster
// replicas, and waits until the cluster is OK (see WaitOK). The slots are
// split evenly over the masters in order; replica j of master i is node
// masters+i*replicasPerMaster+j of Nodes. A master fails over only with
// the votes of most masters: tests that kill one need at least 3.
//
// The cluster is assembled with CLUSTER ADDSLOTSRANGE, MEET and REPLICATE
// rather than redis-cli --cluster create: every wait then has a deadline
// (redis-cli waits for the join without one), replica j of master i is
// where the test expects it (redis-cli shuffles replicas over hosts), and
// redis-cli is not needed. It takes no less time: a master reports
// cluster_state:ok no sooner than 2 s after it started, whoever assembles
// the cluster.
func StartRedisCluster(t testing.TB, masters, replicasPerMaster int) *RedisCluster {
	t.Helper()
	if masters < 1 || replicasPerMaster < 0 {
		t.Fatalf("StartRedisCluster(%d, %d): need a master and no negative replica count", masters, replicasPerMaster)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		Unavailable(t, "redis-server", redisHowTo)
	}
	c := &RedisCluster{t: t, nodes: make([]*ClusterNode, masters*(1+replicasPerMaster))}
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i := range c.nodes {
		n := &ClusterNode{Redis: &Redis{t: t, dir: t.TempDir()}}
		c.nodes[i] = n
		t.Cleanup(n.stop)
		wg.Go(func() { errs[i] = n.startFresh() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("start the cluster's nodes: %v", err)
	}
	c.assemble(masters, replicasPerMaster)
	c.WaitOK()
	return c
}

// startFresh starts the node on a free port with its cluster bus on
// another (port+10000 may be taken or out of range), trying again with new
// ports if either is taken.
func (n *ClusterNode) startFresh() error {
	var err error
	for range 5 {
		var port, bus int
		if port, err = freePort(); err != nil {
			return err
		}
		if bus, err = freePort(); err != nil {
			return err
		}
		if port == bus {
			continue
		}
		n.port, n.bus, n.addr = port, bus, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		n.args = []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(n.dir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", strconv.Itoa(int(clusterNodeTimeout.Milliseconds())),
			"--cluster-replica-validity-factor", "0", // a replica may always take over: tests kill masters at will
			"--cluster-allow-replica-migration", "no", // replicas stay where the test put them
			"--repl-diskless-sync-delay", "0", // else a replica waits 5 s for its first sync
		}
		if err = n.start(); err == nil {
			n.ID, err = redis.String(redisDo(n.addr, "CLUSTER", "MYID"))
			return err
		}
	}
	return err
}

// assemble gives each master its slots and a distinct config epoch, has
// every node meet the first, waits until all know each other, then makes
// the replicas.
func (c *RedisCluster) assemble(masters, replicasPerMaster int) {
	t := c.t
	t.Helper()
	first := c.nodes[0]
	for i, n := range c.nodes {
		if i < masters {
			lo, hi := i*clusterSlots/masters, (i+1)*clusterSlots/masters-1
			c.must(n, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
		}
		c.must(n, "CLUSTER", "SET-CONFIG-EPOCH", i+1)
	}
	for _, n := range c.nodes[1:] {
		c.must(n, "CLUSTER", "MEET", "127.0.0.1", first.port, first.bus)
	}
	pollUntil(t, redisWaitTimeout, "the cluster's nodes meet", func() error {
		for _, n := range c.nodes {
			lines, err := clusterNodes(n.addr)
			if err != nil {
				return err
			}
			if len(lines) != len(c.nodes) {
				return fmt.Errorf("%s knows %d nodes of %d", n.addr, len(lines), len(c.nodes))
			}
			for _, l := range lines {
				if l.is("handshake") || l.is("noaddr") || l.link != "connected" {
					return fmt.Errorf("%s sees %s as %s, %s", n.addr, l.id, l.flags, l.link)
				}
			}
		}
		return nil
	})
	for i, n := range c.nodes[masters:] {
		c.must(n, "CLUSTER", "REPLICATE", c.nodes[i/replicasPerMaster].ID)
	}
}

// must sends a command that has to succeed, failing the test otherwise.
func (c *RedisCluster) must(n *ClusterNode, cmd string, args ...any) any {
	c.t.Helper()
	reply, err := redisDo(n.addr, cmd, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return reply
}

// Nodes returns every node, running or not, in the order they were
// started: the masters first, then their replicas.
func (c *RedisCluster) Nodes() []*ClusterNode { return slices.Clone(c.nodes) }

// Addrs returns the address of every node, for a client's seed list.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// Node returns the node with the given id, or nil.
func (c *RedisCluster) Node(id string) *ClusterNode {
	for _, n := range c.nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

func (c *RedisCluster) live() []*ClusterNode {
	var live []*ClusterNode
	for _, n := range c.nodes {
		if n.running() {
			live = append(live, n)
		}
	}
	return live
}

// Masters returns the running nodes that are masters owning slots now, by
// their own account.
func (c *RedisCluster) Masters() []*ClusterNode {
	c.t.Helper()
	var masters []*ClusterNode
	for _, n := range c.live() {
		if me := c.myself(n); me.is("master") && len(me.ownSlots()) > 0 {
			masters = append(masters, n)
		}
	}
	return masters
}

// Replicas returns the running nodes that replicate master now, by their
// own account.
func (c *RedisCluster) Replicas(master *ClusterNode) []*ClusterNode {
	c.t.Helper()
	var replicas []*ClusterNode
	for _, n := range c.live() {
		if me := c.myself(n); me.is("slave") && me.master == master.ID {
			replicas = append(replicas, n)
		}
	}
	return replicas
}

// replicasFor returns master's running replicas, failing the test for
// want when it has none.
func (c *RedisCluster) replicasFor(want string, master *ClusterNode) []*ClusterNode {
	c.t.Helper()
	replicas := c.Replicas(master)
	if len(replicas) == 0 {
		c.t.Fatalf("%s: master %s has no running replica", want, master.Addr())
	}
	return replicas
}

func (c *RedisCluster) myself(n *ClusterNode) nodeLine {
	c.t.Helper()
	lines, err := clusterNodes(n.addr)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, l := range lines {
		if l.is("myself") {
			return l
		}
	}
	c.t.Fatalf("CLUSTER NODES on %s has no myself line", n.addr)
	return nodeLine{}
}

// KeySlot returns key's hash slot (CLUSTER KEYSLOT).
func (c *RedisCluster) KeySlot(key string) int {
	c.t.Helper()
	slot, err := redis.Int(redisDo(c.anyLive().addr, "CLUSTER", "KEYSLOT", key))
	if err != nil {
		c.t.Fatal(err)
	}
	return slot
}

// SlotOwner returns the master that owns slot, as the first running node
// sees it.
func (c *RedisCluster) SlotOwner(slot int) *ClusterNode {
	c.t.Helper()
	n := c.anyLive()
	lines, err := clusterNodes(n.addr)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, l := range lines {
		if l.is("master") && l.owns(slot) {
			if owner := c.Node(l.id); owner != nil {
				return owner
			}
		}
	}
	c.t.Fatalf("%s knows no owner of slot %d", n.addr, slot)
	return nil
}

// anyLive returns the first running node.
func (c *RedisCluster) anyLive() *ClusterNode {
	c.t.Helper()
	live := c.live()
	if len(live) == 0 {
		c.t.Fatal("no node of the cluster is running")
	}
	return live[0]
}

// WaitOK waits until the running nodes make a healthy cluster: each says
// cluster_state:ok with every slot served, none sees another running node
// as failing or unreachable, all agree on which master owns which slots
// (no killed node among them), and every running replica follows a running
// master and has applied all it had written. Killed nodes are left out: a
// cluster with a killed master is OK again once a replica took its slots.
func (c *RedisCluster) WaitOK() {
	c.t.Helper()
	pollUntil(c.t, redisWaitTimeout, "the cluster is OK", c.ok)
}

func (c *RedisCluster) ok() error {
	live := c.live()
	running := map[string]bool{}
	for _, n := range live {
		running[n.ID] = true
	}
	var owners string
	views := make([][]nodeLine, len(live))
	for i, n := range live {
		info, err := redisInfo(n.addr, "cluster-info")
		if err != nil {
			return err
		}
		if info["cluster_state"] != "ok" || info["cluster_slots_ok"] != strconv.Itoa(clusterSlots) {
			return fmt.Errorf("%s: cluster_state:%s, %s slots ok", n.addr, info["cluster_state"], info["cluster_slots_ok"])
		}
		if views[i], err = clusterNodes(n.addr); err != nil {
			return err
		}
		for _, l := range views[i] {
			if running[l.id] && (l.is("fail") || l.is("fail?") || l.is("handshake") || l.is("noaddr") || l.link != "connected") {
				return fmt.Errorf("%s sees %s as %s, %s", n.addr, l.id, l.flags, l.link)
			}
		}
		o := ownership(views[i])
		if owners == "" {
			owners = o
		} else if o != owners {
			return fmt.Errorf("the nodes disagree on slot owners: %s sees %q, another %q", n.addr, o, owners)
		}
		for _, l := range views[i] {
			if l.is("master") && len(l.ownSlots()) > 0 && !running[l.id] {
				return fmt.Errorf("%s sees slots owned by %s, which is not running", n.addr, l.id)
			}
		}
	}
	for i, n := range live {
		for _, me := range views[i] {
			if !me.is("myself") || !me.is("slave") {
				continue
			}
			m := c.Node(me.master)
			if m == nil || !running[m.ID] {
				return fmt.Errorf("replica %s follows %s, which is not running", n.addr, me.master)
			}
			if err := replicaInSync(n.addr, m.addr); err != nil {
				return err
			}
		}
	}
	return nil
}
