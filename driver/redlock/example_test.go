package redlock_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

// Lock a nightly job so that one pod of several runs it: Redlock over
// three servers, opened by URL. (Compiled, not run: it needs the three
// servers it names.)
func Example() {
	client, err := mutex.Open("redis://redis-a:6379,redis-b:6379,redis-c:6379?timeout=50ms")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = client.NewMutex("nightly-report", mutex.WithTTL(10*time.Second)).Do(ctx, func(ctx context.Context) error {
		// ctx is cancelled if the lease is lost.
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("job ran under the lock")
}

// An application with redigo pools already passes them to FromPools: one
// pool, or three and more for Redlock.
func ExampleFromPools() {
	addr := "127.0.0.1:6379" // nothing is dialled until the first lock
	pool := &redis.Pool{
		MaxIdle:     16,
		IdleTimeout: 5 * time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", addr, redis.DialConnectTimeout(time.Second))
		},
	}
	defer pool.Close()
	client := mutex.NewClient(redlock.FromPools([]*redis.Pool{pool}, redlock.WithNodeTimeout(100*time.Millisecond)))
	defer client.Close()
	fmt.Println(client.NewMutex("orders").Key())
	// Output: orders
}

// NewConnector takes Options beside the DSN, for what a DSN cannot say:
// here a TLS configuration of the application's.
func ExampleNewConnector() {
	conn, err := redlock.NewConnector("rediss://redis.internal:6380/2", redlock.WithTLSConfig(&tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: "redis.internal",
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	client := mutex.NewClient(conn) // nothing is dialled until the first lock
	defer client.Close()
	fmt.Println(conn.DriverName())
	// Output: redis
}
