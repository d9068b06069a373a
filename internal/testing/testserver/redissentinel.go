package testserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// SentinelMasterName is the name under which the sentinels of
// StartRedisSentinel monitor their master.
const SentinelMasterName = "mutexkit"

const (
	// sentinelDownAfter is down-after-milliseconds: a master that does not
	// answer this long is down; a failover follows within a few seconds.
	sentinelDownAfter = time.Second
	// sentinelFailoverTimeout is failover-timeout. It also sets how soon
	// sentinels re-point a replica that follows another address than the
	// master's (PauseReplication's relay): not before this long.
	sentinelFailoverTimeout = 5 * time.Second
)

// RedisSentinel is a master, one replica and three sentinels (quorum 2) a
// test started, redis-server processes on free loopback ports, each in a
// temporary directory, killed when the test ends (MUTEXKIT_REDIS_ADDRS
// plays no part). Its methods fail the test when what they wait for does
// not happen within 30 s; call them from the test's goroutine.
type RedisSentinel struct {
	t         testing.TB
	data      [2]*Redis // the master and the replica, as started
	sentinels []*Redis

	mu   sync.Mutex
	hold *replHold // the relay of a paused replication link
}

// StartRedisSentinel starts a master, a replica of it and three sentinels
// monitoring it as SentinelMasterName, and waits until the replica is in
// sync and every sentinel knows the two others and the replica.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		Unavailable(t, "redis-server", redisHowTo)
	}
	r := &RedisSentinel{t: t}
	dataArgs := []string{"--repl-diskless-sync-delay", "0"} // else a replica waits 5 s for its first sync
	for i := range r.data {
		r.data[i] = &Redis{t: t, dir: t.TempDir(), args: dataArgs}
	}
	r.startAll(r.data[:])
	master, replica := r.data[0], r.data[1]
	if _, err := redisDo(replica.addr, "REPLICAOF", "127.0.0.1", master.port); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, redisWaitTimeout, "the replica syncs", func() error { return replicaInSync(replica.addr, master.addr) })

	for range 3 {
		s := &Redis{t: t, dir: t.TempDir(), args: []string{"--sentinel"}}
		s.conf = filepath.Join(s.dir, "sentinel.conf")
		conf := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
			"sentinel down-after-milliseconds %[1]s %[3]d\n"+
			"sentinel failover-timeout %[1]s %[4]d\n",
			SentinelMasterName, master.port, sentinelDownAfter.Milliseconds(), sentinelFailoverTimeout.Milliseconds())
		if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		r.sentinels = append(r.sentinels, s)
	}
	r.startAll(r.sentinels)
	pollUntil(t, redisWaitTimeout, "the sentinels know each other and the replica", r.ready)
	return r
}

func (r *RedisSentinel) startAll(servers []*Redis) {
	r.t.Helper()
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		r.t.Cleanup(s.stop)
		wg.Go(func() { errs[i] = s.startFresh() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
}

// ready reports why a sentinel does not yet see the master up with the
// two other sentinels and the replica up, or nil.
func (r *RedisSentinel) ready() error {
	for _, s := range r.sentinels {
		m, err := redis.StringMap(redisDo(s.addr, "SENTINEL", "MASTER", SentinelMasterName))
		if err != nil {
			return err
		}
		if m["flags"] != "master" || m["num-other-sentinels"] != "2" || m["num-slaves"] != "1" {
			return fmt.Errorf("sentinel %s: master flags %s, %s other sentinels, %s replicas",
				s.addr, m["flags"], m["num-other-sentinels"], m["num-slaves"])
		}
		replicas, err := redis.Values(redisDo(s.addr, "SENTINEL", "REPLICAS", SentinelMasterName))
		if err != nil {
			return err
		}
		for _, v := range replicas {
			rm, err := redis.StringMap(v, nil)
			if err != nil {
				return err
			}
			if rm["flags"] != "slave" || rm["master-link-status"] != "ok" {
				return fmt.Errorf("sentinel %s: replica %s:%s flags %s, link %s",
					s.addr, rm["ip"], rm["port"], rm["flags"], rm["master-link-status"])
			}
		}
	}
	return nil
}

// MasterName returns the name the sentinels monitor the master under.
func (r *RedisSentinel) MasterName() string { return SentinelMasterName }

// SentinelAddrs returns the sentinels' addresses.
func (r *RedisSentinel) SentinelAddrs() []string {
	addrs := make([]string, len(r.sentinels))
	for i, s := range r.sentinels {
		addrs[i] = s.addr
	}
	return addrs
}

// Sentinels returns the sentinels, to kill, pause or restart one.
func (r *RedisSentinel) Sentinels() []*Redis { return append([]*Redis(nil), r.sentinels...) }

// MasterAddr returns the master's address as the first sentinel that
// answers reports it (SENTINEL GET-MASTER-ADDR-BY-NAME).
func (r *RedisSentinel) MasterAddr() string {
	r.t.Helper()
	var errs []error
	for _, s := range r.sentinels {
		if !s.running() {
			continue
		}
		addr, err := sentinelMasterAddr(s.addr)
		if err == nil {
			return addr
		}
		errs = append(errs, err)
	}
	r.t.Fatalf("no sentinel tells the master's address: %v", errors.Join(errs...))
	return ""
}

func sentinelMasterAddr(sentinel string) (string, error) {
	hp, err := redis.Strings(redisDo(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMasterName))
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("sentinel %s: master address %q", sentinel, hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// Master returns the data node at MasterAddr.
func (r *RedisSentinel) Master() *Redis {
	r.t.Helper()
	addr := r.MasterAddr()
	for _, n := range r.data {
		if n.addr == addr {
			return n
		}
	}
	r.t.Fatalf("the sentinels name %s master, none of the data nodes", addr)
	return nil
}

// Replica returns the data node that is not the master (killed, if
// KillMaster was called and the old master was not restarted).
func (r *RedisSentinel) Replica() *Redis {
	r.t.Helper()
	if m := r.Master(); m == r.data[0] {
		return r.data[1]
	}
	return r.data[0]
}

// KillMaster kills the master (SIGKILL), waits until every running
// sentinel names the replica master and it says so itself, and returns it.
// Writes the old master acknowledged but the replica had not applied (see
// PauseReplication) are lost. A Restart of the old node brings it back
// empty, as a master the sentinels make a replica after about 8 s.
func (r *RedisSentinel) KillMaster() *Redis {
	r.t.Helper()
	old, next := r.Master(), r.Replica()
	r.mu.Lock()
	h := r.hold
	r.mu.Unlock()
	if h != nil {
		info, err := redisInfo(next.addr, "replication")
		if err != nil {
			r.t.Fatal(err)
		}
		if info["master_port"] != strconv.Itoa(h.port()) {
			r.t.Fatalf("KillMaster: the paused replica follows port %s, no longer the relay: the sentinels re-pointed it "+
				"(failover-timeout %v after they noticed); pause closer to the failover", info["master_port"], sentinelFailoverTimeout)
		}
	}
	old.Kill()
	pollUntil(r.t, redisWaitTimeout, "the sentinels promote "+next.addr, func() error {
		for _, s := range r.sentinels {
			if !s.running() {
				continue
			}
			addr, err := sentinelMasterAddr(s.addr)
			if err != nil {
				return err
			}
			if addr != next.addr {
				return fmt.Errorf("sentinel %s names %s master", s.addr, addr)
			}
		}
		role, err := redis.Values(redisDo(next.addr, "ROLE"))
		if err != nil {
			return err
		}
		if len(role) == 0 || fmt.Sprintf("%s", role[0]) != "master" {
			return fmt.Errorf("%s says its role is %s", next.addr, role)
		}
		return nil
	})
	return next
}

// PauseReplication stops the replica from receiving anything more from the
// master, while it stays up, answering, and to the sentinels a replica fit
// for promotion; WAIT on the master then counts no replica. It re-points
// the replica at a relay in the test process (REPLICAOF, a partial resync),
// waits until the replica is in sync through it, and holds the relay.
// resume points the replica at the master again (if it still follows the
// relay) and closes the relay; it is also called when the test ends.
//
// The sentinels re-point a replica that follows another address than the
// master's failover-timeout (5 s) after they notice, often later (they
// read a replica's INFO every 10 s); KillMaster fails the test if that
// happened, so kill the master within 5 s of pausing.
func (r *RedisSentinel) PauseReplication() (resume func()) {
	r.t.Helper()
	master, replica := r.Master(), r.Replica()
	h, err := newReplHold(master.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			r.mu.Lock()
			r.hold = nil
			r.mu.Unlock()
			if info, err := redisInfo(replica.addr, "replication"); err == nil && info["master_port"] == strconv.Itoa(h.port()) {
				redisDo(replica.addr, "REPLICAOF", "127.0.0.1", master.port) // it resyncs from what it has applied
			}
			h.close()
		})
	}
	r.t.Cleanup(resume)
	if _, err := redisDo(replica.addr, "REPLICAOF", "127.0.0.1", h.port()); err != nil {
		r.t.Fatal(err)
	}
	pollUntil(r.t, redisWaitTimeout, "the replica syncs through the relay", func() error {
		info, err := redisInfo(replica.addr, "replication")
		if err != nil {
			return err
		}
		if info["master_port"] != strconv.Itoa(h.port()) {
			return fmt.Errorf("the replica follows port %s", info["master_port"])
		}
		return replicaInSync(replica.addr, master.addr)
	})
	h.hold()
	r.mu.Lock()
	r.hold = h
	r.mu.Unlock()
	return resume
}
