package bench

import (
	"context"
	"database/sql"
	"os"
	"strconv"
	"testing"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/mutex"
)

// BenchmarkUncontended is one TryLock and one Unlock of a free key, by one
// goroutine: the latency of taking and giving back a lock nobody else
// wants, and what it allocates.
func BenchmarkUncontended(b *testing.B) {
	b.Run("backend="+redis1, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { uncontendedOurs(b, openOurs(b, redis1)) })
		b.Run("impl=ours-goredis", func(b *testing.B) { uncontendedOurs(b, openGoRedis(b, redisAddrs(b, 1)[0])) })
		b.Run("impl=redsync", func(b *testing.B) { uncontendedRedsync(b, redisAddrs(b, 1)) })
		b.Run("impl=redislock", uncontendedRedislock)
		b.Run("impl=floor", uncontendedRedisFloor)
	})
	b.Run("backend="+cluster3, func(b *testing.B) { b.Run("impl=ours-goredis", uncontendedCluster) })
	b.Run("backend="+redis5, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { uncontendedOurs(b, openOurs(b, redis5)) })
		b.Run("impl=redsync", func(b *testing.B) { uncontendedRedsync(b, redisAddrs(b, nodesOf5)) })
	})
	b.Run("backend="+pg, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { uncontendedOurs(b, openOurs(b, pg)) })
		b.Run("impl=ours-fencing", func(b *testing.B) { uncontendedOurs(b, openOurs(b, pg), mutex.WithFencing()) })
		b.Run("impl=ours-pgx", func(b *testing.B) { uncontendedOurs(b, openPgx(b)) })
		b.Run("impl=floor", uncontendedPostgresFloor)
	})
	b.Run("backend="+mysqlBackend, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { uncontendedOurs(b, openOurs(b, mysqlBackend)) })
		b.Run("impl=ours-fencing", func(b *testing.B) { uncontendedOurs(b, openOurs(b, mysqlBackend), mutex.WithFencing()) })
		b.Run("impl=floor", uncontendedMySQLFloor)
	})
	b.Run("backend="+memory, func(b *testing.B) {
		b.Run("impl=ours", func(b *testing.B) { uncontendedOurs(b, openOurs(b, memory)) })
	})
}

func uncontendedOurs(b *testing.B, c *mutex.Client, opts ...mutex.MutexOption) {
	ctx := context.Background()
	m := c.NewMutex(keyFor(b), opts...)
	lease, err := m.TryLock(ctx) // warm up: connections, sessions, scripts
	if err != nil {
		b.Fatal(err)
	}
	if err := lease.Unlock(ctx); err != nil {
		b.Fatal(err)
	}
	pinPostgresIf(b)
	b.ReportAllocs()
	for b.Loop() {
		lease, err := m.TryLock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := lease.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// pinPostgresIf pins this process's PostgreSQL backends when b is a
// PostgreSQL benchmark.
func pinPostgresIf(b *testing.B) {
	if containsElem(b.Name(), "backend="+pg) {
		pinPostgres(b, postgresDSN(b))
	}
}

func uncontendedRedsync(b *testing.B, addrs []string) {
	ctx := context.Background()
	m := newRedsync(b, addrs).NewMutex(keyFor(b), redsyncExpiry)
	b.ReportAllocs()
	for b.Loop() {
		if err := m.TryLockContext(ctx); err != nil {
			b.Fatal(err)
		}
		if ok, err := m.UnlockContext(ctx); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func uncontendedRedislock(b *testing.B) {
	ctx := context.Background()
	c := newRedislock(b, redisAddrs(b, 1)[0])
	key := keyFor(b)
	b.ReportAllocs()
	for b.Loop() {
		lock, err := c.Obtain(ctx, key, ttl, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := lock.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// floorRelease is the compare-and-delete every Redis lock releases with.
var floorRelease = redis.NewScript(1, `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`)

// uncontendedRedisFloor is what a Redis lock cannot do with less: SET NX
// PX and a compare-and-delete script by EVALSHA, on one connection taken
// from the pool once, with a fixed owner value.
func uncontendedRedisFloor(b *testing.B) {
	conn := redigoPool(b, redisAddrs(b, 1)[0]).Get()
	defer conn.Close()
	if err := floorRelease.Load(conn); err != nil {
		b.Fatal(err)
	}
	key, owner, ttlMs := keyFor(b), "0123456789abcdef0123456789abcdef", ttl.Milliseconds()
	sha := floorRelease.Hash()
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := redis.String(conn.Do("SET", key, owner, "NX", "PX", ttlMs)); ok != "OK" || err != nil {
			b.Fatal(ok, err)
		}
		if n, err := redis.Int(conn.Do("EVALSHA", sha, 1, key, owner)); n != 1 || err != nil {
			b.Fatal(n, err)
		}
	}
}

// uncontendedPostgresFloor is what a PostgreSQL lock cannot do with less:
// prepared pg_try_advisory_lock and pg_advisory_unlock on a pinned
// connection, one round trip each.
func uncontendedPostgresFloor(b *testing.B) {
	ctx := context.Background()
	dsn := postgresDSN(b)
	db, err := sql.Open("postgres", withAppName(dsn, "mutexkit-bench-floor "+strconv.Itoa(os.Getpid())))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	lock, err := conn.PrepareContext(ctx, `SELECT pg_try_advisory_lock($1)`)
	if err != nil {
		b.Fatal(err)
	}
	defer lock.Close()
	unlock, err := conn.PrepareContext(ctx, `SELECT pg_advisory_unlock($1)`)
	if err != nil {
		b.Fatal(err)
	}
	defer unlock.Close()
	pinPostgres(b, dsn)
	id := postgres.KeyID(b.Name(), "k")
	b.ReportAllocs()
	for b.Loop() {
		var ok bool
		if err := lock.QueryRowContext(ctx, id).Scan(&ok); err != nil || !ok {
			b.Fatal(ok, err)
		}
		if err := unlock.QueryRowContext(ctx, id).Scan(&ok); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}
