package redlock

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/backend"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/pipeline"
)

// Nodes another module supplies (driver/redlock/goredis): its transport
// and subscription, this package's Locker.
func init() {
	backend.NewConnector = func(newNodes func() ([]backend.Node, error), opts any) driver.Connector {
		cfg := defaultConfig()
		o, _ := opts.([]Option)
		cfg.apply(o)
		return &connector{cfg: cfg, external: newNodes}
	}
}

// external is a transport a module supplies.
type external struct{ t backend.Transport }

func (e external) do(ctx context.Context, deadline time.Time, cmd string, args []any) (any, error) {
	return e.t.Do(ctx, deadline, cmd, args)
}

func (e external) doAll(ctx context.Context, deadline time.Time, cmds []pipeline.Cmd, out []result) {
	e.t.DoAll(ctx, deadline, cmds, out)
}

func (e external) close() { e.t.Close() }

// connectExternal makes a Locker over the nodes c.external returns.
func (c *connector) connectExternal(cfg *config) (driver.Locker, error) {
	bs, err := c.external()
	if err != nil {
		return nil, err
	}
	if err := checkNodeCount(len(bs)); err != nil {
		return nil, fmt.Errorf("redlock: %d clients: %w: %w", len(bs), driver.ErrInvalid, err)
	}
	if slices.ContainsFunc(bs, func(b backend.Node) bool { return b.T == nil }) {
		return nil, fmt.Errorf("redlock: a node without a transport: %w", driver.ErrInvalid)
	}
	nodes := make([]*node, len(bs))
	var shards []func(context.Context, string) (backend.Sub, error)
	for i, b := range bs {
		if cfg.acks.on() && b.NoReplicaAcks != "" {
			return nil, fmt.Errorf("redlock: %s: WithReplicaAcks: %s: %w", b.Name, b.NoReplicaAcks, driver.ErrInvalid)
		}
		nodes[i] = &node{name: b.Name, t: external{b.T}, sub: b.Dial}
		if b.DialShard != nil {
			shards = append(shards, b.DialShard)
		}
	}
	l := newLocker(cfg, nodes)
	if len(shards) == len(bs) { // Redis Clusters all: sharded pub/sub (watch.go)
		l.shard(shards)
	}
	return l, nil
}
