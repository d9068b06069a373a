package testserver

import (
	"fmt"

	"github.com/gomodule/redigo/redis"
)

// MigrationStep is how far MigrateSlot has gone when it calls its hook.
type MigrationStep int

const (
	// MigrationImporting: the target has marked the slot IMPORTING. The
	// source still serves every key of the slot as before.
	MigrationImporting MigrationStep = iota + 1
	// MigrationMigrating: the source has marked it MIGRATING too, and no
	// key has moved yet. The source serves the keys it has and answers
	// -ASK for those it lacks (a new key is created on the target, after
	// ASKING).
	MigrationMigrating
	// MigrationKeysMoved: every key of the slot has moved to the target
	// (MIGRATE), which does not own the slot yet. The source answers -ASK
	// for every key; the target serves them after ASKING and answers
	// -MOVED (to the source) without it.
	MigrationKeysMoved
)

func (s MigrationStep) String() string {
	switch s {
	case MigrationImporting:
		return "importing"
	case MigrationMigrating:
		return "migrating"
	case MigrationKeysMoved:
		return "keys moved"
	}
	return fmt.Sprintf("MigrationStep(%d)", int(s))
}

// MigrateSlot moves slot from the master that owns it to the master to,
// as redis-cli --cluster reshard does, step by step: CLUSTER SETSLOT
// IMPORTING on the target, MIGRATING on the source, MIGRATE of the keys in
// batches of 100, then SETSLOT NODE on the target, the source and the
// other masters. After each of the first three steps it calls hook (if not
// nil) with the step, so that a test can meet -ASK and -MOVED mid-way. It
// returns when every running node sees to as the slot's owner and neither
// node shows the migration any more.
func (c *RedisCluster) MigrateSlot(slot int, to *ClusterNode, hook func(MigrationStep)) {
	c.t.Helper()
	from := c.SlotOwner(slot)
	if from == to {
		c.t.Fatalf("MigrateSlot: %s already owns slot %d", to.Addr(), slot)
	}
	step := func(s MigrationStep) {
		if hook != nil {
			hook(s)
		}
	}
	c.must(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", from.ID)
	step(MigrationImporting)
	c.must(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", to.ID)
	step(MigrationMigrating)
	for {
		keys, err := redis.Strings(c.must(from, "CLUSTER", "GETKEYSINSLOT", slot, 100), nil)
		if err != nil {
			c.t.Fatal(err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"127.0.0.1", to.port, "", 0, 2000, "KEYS"} // 2 s: below redisCmdTimeout
		for _, k := range keys {
			args = append(args, k)
		}
		c.must(from, "MIGRATE", args...)
	}
	step(MigrationKeysMoved)
	// The target first: once it owns the slot, the source's -ASK and the
	// target's -MOVED lead clients to it rather than round in a circle.
	c.must(to, "CLUSTER", "SETSLOT", slot, "NODE", to.ID)
	c.must(from, "CLUSTER", "SETSLOT", slot, "NODE", to.ID)
	for _, m := range c.Masters() {
		if m != to && m != from {
			c.must(m, "CLUSTER", "SETSLOT", slot, "NODE", to.ID)
		}
	}
	pollUntil(c.t, redisWaitTimeout, fmt.Sprintf("slot %d moves to %s", slot, to.Addr()), func() error {
		for _, n := range c.live() {
			lines, err := clusterNodes(n.addr)
			if err != nil {
				return err
			}
			owner := ""
			for _, l := range lines {
				if l.is("master") && l.owns(slot) {
					owner = l.id
				}
				if l.is("myself") && len(l.ownSlots()) != len(l.slots) {
					return fmt.Errorf("%s still shows a migration: %v", n.addr, l.slots)
				}
			}
			if owner != to.ID {
				return fmt.Errorf("%s sees %q as the owner of slot %d", n.addr, owner, slot)
			}
		}
		return nil
	})
}
