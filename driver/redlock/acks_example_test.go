package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

// A master with replicas: a lock counts as taken once one replica has it
// too, so that a failover to that replica keeps it. (Compiled, not run: it
// needs the master it names. With Sentinel, go-redis's FailoverClient and
// goredis.FromClient take the same Option.)
func ExampleWithReplicaAcks() {
	conn, err := redlock.NewConnector("redis://redis-master:6379", redlock.WithReplicaAcks(1, 100*time.Millisecond))
	if err != nil {
		fmt.Println(err)
		return
	}
	client := mutex.NewClient(conn)
	defer client.Close()
	lease, err := client.NewMutex("nightly-report").TryLock(context.Background())
	switch {
	case errors.Is(err, redlock.ErrNotReplicated):
		fmt.Println("no replica acknowledged the grant in time: not taken, try later")
		return
	case err != nil:
		fmt.Println(err)
		return
	}
	defer lease.Unlock(context.Background())
	fmt.Println("held, on the master and a replica")
}
