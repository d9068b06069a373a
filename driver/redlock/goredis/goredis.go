package goredis

import (
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/backend"
)

// ErrRing is what Connect reports (wrapped, with driver.ErrInvalid) for a
// *redis.Ring: a Ring moves the keys of a shard it marks down to the
// others, where a held lock is not, so a second holder would get it.
var ErrRing = errors.New("goredis: a *redis.Ring cannot lock: it hands a shard's keys to another shard when it thinks it down, where a held lock is free")

// FromClient returns a Connector that locks on the one logical node c
// talks to: a server (*redis.Client, a single-instance lock, which can
// fence), or a Redis Cluster (*redis.ClusterClient: each key on the master
// of its slot; see the package doc). The Lockers it makes share c and
// never close it. Pass it to mutex.NewClient.
func FromClient(c redis.UniversalClient, opts ...redlock.Option) driver.Connector {
	return FromClients([]redis.UniversalClient{c}, opts...)
}

// FromClients returns a Connector for Redlock over independent servers or
// clusters, one client each: three or more (or one: FromClient). A wrong
// number of clients, a nil client, a *redis.Ring (ErrRing) or a bad Option
// is reported by Connect, matching driver.ErrInvalid. The Lockers it makes
// share the clients and never close them.
func FromClients(cs []redis.UniversalClient, opts ...redlock.Option) driver.Connector {
	cs = slices.Clone(cs)
	return backend.NewConnector(func() ([]backend.Node, error) {
		nodes := make([]backend.Node, len(cs))
		for i, c := range cs {
			name := fmt.Sprintf("go-redis client %d", i)
			switch rc := c.(type) {
			case nil:
				return nil, fmt.Errorf("goredis: client %d is nil: %w", i, driver.ErrInvalid)
			case *redis.Client:
				if rc == nil {
					return nil, fmt.Errorf("goredis: client %d is nil: %w", i, driver.ErrInvalid)
				}
			case *redis.ClusterClient:
				if rc == nil {
					return nil, fmt.Errorf("goredis: client %d is nil: %w", i, driver.ErrInvalid)
				}
				name = fmt.Sprintf("go-redis cluster client %d", i)
			case *redis.Ring:
				return nil, fmt.Errorf("client %d: %w: %w", i, ErrRing, driver.ErrInvalid)
			}
			nodes[i] = backend.Node{Name: name, T: newTransport(c), Dial: dial(c)}
			switch cc := c.(type) {
			case *redis.Client: // a pipeline is one connection: WAIT follows the write on it
			case *redis.ClusterClient:
				nodes[i].DialShard = dialShard(cc)
				nodes[i].NoReplicaAcks = "not supported over a Redis Cluster client, which would send WAIT to another node than the write's"
			default: // an application's type: its pipeline may go anywhere, WAIT too
				nodes[i].NoReplicaAcks = fmt.Sprintf("needs a *redis.Client (NewClient, NewFailoverClient), not a %T, whose WAIT may not follow the write on its connection", c)
			}
		}
		return nodes, nil
	}, opts)
}
