package goredis_test

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/mutex"
)

// A Redis Cluster: each key is locked on the master of its slot, and
// waiters are woken by sharded pub/sub. A failover of a master can lose a
// grant it had not yet replicated. (Compiled, not run: it needs the
// cluster it names.)
func ExampleFromClient_cluster() {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 []string{"redis-a:7000", "redis-b:7000", "redis-c:7000"},
		ContextTimeoutEnabled: true,
	})
	defer rdb.Close()
	ctx := context.Background()
	// Load the slot map and dial the masters before the first lock, whose
	// call is bounded by a tenth of its TTL.
	if err := rdb.ForEachShard(ctx, func(ctx context.Context, shard *redis.Client) error {
		return shard.Ping(ctx).Err()
	}); err != nil {
		fmt.Println(err)
		return
	}
	client := mutex.NewClient(goredis.FromClient(rdb))
	defer client.Close()
	err := client.NewMutex("nightly-report").TryDo(ctx, func(ctx context.Context) error {
		return nil // the work
	})
	fmt.Println(err)
}
