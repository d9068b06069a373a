package goredis

import (
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/backend"
)

// FromClient returns a Connector that locks on the one server c talks to
// (a single-instance lock, which can fence). The Lockers it makes share c
// and never close it. Pass it to mutex.NewClient.
func FromClient(c redis.UniversalClient, opts ...redlock.Option) driver.Connector {
	return FromClients([]redis.UniversalClient{c}, opts...)
}

// FromClients returns a Connector for Redlock over independent servers,
// one client each: three or more (or one: FromClient). A wrong number of
// clients, a nil client, a *redis.ClusterClient or *redis.Ring (not
// supported yet) or a bad Option is reported by Connect, matching
// driver.ErrInvalid. The Lockers it makes share the clients and never
// close them.
func FromClients(cs []redis.UniversalClient, opts ...redlock.Option) driver.Connector {
	cs = slices.Clone(cs)
	return backend.NewConnector(func() ([]backend.Node, error) {
		nodes := make([]backend.Node, len(cs))
		for i, c := range cs {
			switch c := c.(type) {
			case nil:
				return nil, fmt.Errorf("goredis: client %d is nil: %w", i, driver.ErrInvalid)
			case *redis.Client:
				if c == nil {
					return nil, fmt.Errorf("goredis: client %d is nil: %w", i, driver.ErrInvalid)
				}
			case *redis.ClusterClient, *redis.Ring:
				// Not tested yet (slots moving, failover, sharded pub/sub).
				return nil, fmt.Errorf("goredis: client %d: Redis Cluster and Ring clients are not supported yet: %w", i, driver.ErrInvalid)
			}
			nodes[i] = backend.Node{Name: fmt.Sprintf("go-redis client %d", i), T: newTransport(c), Dial: dial(c)}
		}
		return nodes, nil
	}, opts)
}
