package bench

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	redsyncredigo "github.com/go-redsync/redsync/v4/redis/redigo"
	"github.com/gomodule/redigo/redis"
	goredis "github.com/redis/go-redis/v9"

	_ "github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/driver/postgres"
	_ "github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

// ttl is the lease length every library is given (ours: mutex.DefaultTTL;
// redsync's default is 8s, redislock has none), so that none of them does
// less work for a shorter one.
const ttl = mutex.DefaultTTL

// poolSize bounds the connections each peer keeps per Redis node: redigo
// keeps none idle by default (a dial per call) and go-redis ten per CPU.
// Ours keeps 64 idle by default.
const poolSize = 64

// Backends, as named in benchmark names.
const (
	redis1   = "redis1"
	redis5   = "redis5"
	pg       = "postgres"
	memory   = "mem"
	nodesOf5 = 5
	// mysqlBackend is MySQL or MariaDB (the package name mysql is the driver's).
	mysqlBackend = "mysql"
)

// keyFor gives each benchmark its own key, so that none meets another's
// leftovers on a shared server.
func keyFor(b testing.TB) string { return "bench/" + b.Name() }

// openOurs opens a mutexkit client on backend: redlock over 1 or 5
// nodes, postgres, mysql, or mem. Fencing is the Mutex's (mutex.WithFencing).
func openOurs(b testing.TB, backend string, opts ...mutex.Option) *mutex.Client {
	b.Helper()
	var (
		c   *mutex.Client
		err error
	)
	switch backend {
	case redis1:
		c, err = mutex.Open("redis://"+redisAddrs(b, 1)[0], opts...)
	case redis5:
		c, err = mutex.Open("redis://"+strings.Join(redisAddrs(b, nodesOf5), ","), opts...)
	case pg:
		return openOursPostgres(b, postgresDSN(b), opts...)
	case mysqlBackend:
		dsn, _ := mysqlDSN(b)
		return openOursMySQL(b, dsn, opts...)
	case memory:
		c, err = mutex.Open("mem://"+b.Name(), opts...)
	default:
		b.Fatalf("unknown backend %q", backend)
	}
	if err != nil {
		b.Fatal(err)
	}
	return pinged(b, c)
}

// openOursPostgres opens a mutexkit client on the PostgreSQL server at dsn.
func openOursPostgres(b testing.TB, dsn string, opts ...mutex.Option) *mutex.Client {
	b.Helper()
	cn, err := postgres.NewConnector(dsn, postgres.WithNamespace(b.Name()))
	if err != nil {
		b.Fatal(err)
	}
	return pinged(b, mutex.NewClient(cn, opts...))
}

// pinged closes c when b ends, and checks that it reaches its backend.
func pinged(b testing.TB, c *mutex.Client) *mutex.Client {
	b.Helper()
	b.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		b.Fatal(err)
	}
	return c
}

// redigoPool is a pool for the peers and the floor, sized as ours.
func redigoPool(b testing.TB, addr string) *redis.Pool {
	p := &redis.Pool{
		MaxIdle:     poolSize,
		MaxActive:   poolSize,
		Wait:        true,
		IdleTimeout: 5 * time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", addr)
		},
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// newRedsync returns redsync over one redigo pool per address.
func newRedsync(b testing.TB, addrs []string) *redsync.Redsync {
	pools := make([]*redis.Pool, 0, len(addrs))
	for _, a := range addrs {
		pools = append(pools, redigoPool(b, a))
	}
	return redsyncOver(pools)
}

// redsyncOver returns redsync over the given redigo pools.
func redsyncOver(pools []*redis.Pool) *redsync.Redsync {
	ps := make([]redsyncredis.Pool, 0, len(pools))
	for _, p := range pools {
		ps = append(ps, redsyncredigo.NewPool(p))
	}
	return redsync.New(ps...)
}

// newRedislock returns a redislock client over go-redis.
func newRedislock(b testing.TB, addr string) *redislock.Client {
	rdb := goredis.NewClient(&goredis.Options{Addr: addr, PoolSize: poolSize})
	b.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
	return redislock.New(rdb)
}

// redsyncExpiry gives redsync the lease length the others have.
var redsyncExpiry = redsync.WithExpiry(ttl)

// containsElem reports whether the benchmark name has elem as one of its
// slash-separated parts.
func containsElem(name, elem string) bool { return slices.Contains(strings.Split(name, "/"), elem) }
