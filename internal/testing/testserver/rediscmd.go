package testserver

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// redisCmdTimeout bounds each step (dial, write, read) of one command the
// cluster and sentinel helpers send.
const redisCmdTimeout = 5 * time.Second

// redisWaitTimeout bounds every wait for a cluster's nodes, or sentinels,
// to agree.
const redisWaitTimeout = 30 * time.Second

// redisDo sends one command to addr on a connection of its own.
func redisDo(addr, cmd string, args ...any) (any, error) {
	c, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(redisCmdTimeout),
		redis.DialReadTimeout(redisCmdTimeout), redis.DialWriteTimeout(redisCmdTimeout))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	reply, err := c.Do(cmd, args...)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", cmd, addr, err)
	}
	return reply, nil
}

// redisInfo returns the fields of INFO section (or of CLUSTER INFO when
// section is "cluster-info") as a map.
func redisInfo(addr, section string) (map[string]string, error) {
	var reply any
	var err error
	if section == "cluster-info" {
		reply, err = redisDo(addr, "CLUSTER", "INFO")
	} else {
		reply, err = redisDo(addr, "INFO", section)
	}
	text, err := redis.String(reply, err)
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for line := range strings.Lines(text) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	return fields, nil
}

// replicaInSync reports why the replica at addr has not yet applied
// everything the master at masterAddr had written when asked, or nil.
func replicaInSync(addr, masterAddr string) error {
	m, err := redisInfo(masterAddr, "replication")
	if err != nil {
		return err
	}
	r, err := redisInfo(addr, "replication")
	if err != nil {
		return err
	}
	if r["role"] != "slave" || r["master_link_status"] != "up" || r["master_sync_in_progress"] != "0" {
		return fmt.Errorf("replica %s: role %s, link %s, sync in progress %s", addr, r["role"], r["master_link_status"], r["master_sync_in_progress"])
	}
	var want, got int64
	fmt.Sscan(m["master_repl_offset"], &want)
	fmt.Sscan(r["slave_repl_offset"], &got)
	if got < want {
		return fmt.Errorf("replica %s has applied offset %d of the master's %d", addr, got, want)
	}
	return nil
}

// pollUntil calls cond every 50 ms until it returns nil, and fails t
// with cond's last error if timeout passes first.
func pollUntil(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running reports whether the server's process is up: started, not
// killed, not exited.
func (s *Redis) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}
