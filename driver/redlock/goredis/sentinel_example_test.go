package goredis_test

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/mutex"
)

// A master with a replica, watched by three sentinels: go-redis's
// FailoverClient follows a failover, and WithReplicaAcks grants a lock only
// once the replica has it, so that the failover keeps it. (Compiled, not
// run: it needs the sentinels it names.)
func ExampleFromClient_sentinel() {
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            "mymaster",
		SentinelAddrs:         []string{"sentinel-a:26379", "sentinel-b:26379", "sentinel-c:26379"},
		ContextTimeoutEnabled: true,
	})
	defer rdb.Close()
	client := mutex.NewClient(goredis.FromClient(rdb, redlock.WithReplicaAcks(1, 100*time.Millisecond)))
	defer client.Close()
	err := client.NewMutex("nightly-report").TryDo(context.Background(), func(ctx context.Context) error {
		return nil // the work, under a lock a failover does not lose (as far as WAIT goes)
	})
	fmt.Println(err)
}
