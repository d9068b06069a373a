package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// BenchmarkFloor is what an uncontended TryLock+Unlock cannot do with less:
// prepared pg_try_advisory_lock and pg_advisory_unlock on a pinned
// connection, one round trip each.
func BenchmarkFloor(b *testing.B) {
	dsn := testserver.PostgresDSN(b)
	ctx := context.Background()
	db, err := sql.Open("postgres", dsn)
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
	unlock, err := conn.PrepareContext(ctx, `SELECT pg_advisory_unlock($1)`)
	if err != nil {
		b.Fatal(err)
	}
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

// BenchmarkTryLockUnlock is the same through package mutex and this
// driver, with fencing off and on.
func BenchmarkTryLockUnlock(b *testing.B) {
	dsn := testserver.PostgresDSN(b)
	for _, fencing := range []bool{false, true} {
		b.Run(fmt.Sprintf("fencing=%v", fencing), func(b *testing.B) {
			ctx := context.Background()
			conn, err := postgres.NewConnector(dsn, postgres.WithNamespace(b.Name()), postgres.WithFencing(fencing))
			if err != nil {
				b.Fatal(err)
			}
			c := mutex.OpenConnector(conn)
			defer c.Close()
			m := c.NewMutex("k")
			if err := c.Ping(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				l, err := m.TryLock(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVersusFloor alternates blocks of the floor and of
// TryLock+Unlock through mutex on the same machine moments apart, so a
// shared, noisy machine loads both alike, and reports their ratio.
func BenchmarkVersusFloor(b *testing.B) {
	dsn := testserver.PostgresDSN(b)
	ctx := context.Background()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	lock, _ := conn.PrepareContext(ctx, `SELECT pg_try_advisory_lock($1)`)
	unlock, _ := conn.PrepareContext(ctx, `SELECT pg_advisory_unlock($1)`)
	id := postgres.KeyID(b.Name(), "floor")
	for _, fencing := range []bool{false, true} {
		b.Run(fmt.Sprintf("fencing=%v", fencing), func(b *testing.B) {
			pc, err := postgres.NewConnector(dsn, postgres.WithNamespace(b.Name()), postgres.WithFencing(fencing))
			if err != nil {
				b.Fatal(err)
			}
			c := mutex.OpenConnector(pc)
			defer c.Close()
			m := c.NewMutex("k")
			if err := c.Ping(ctx); err != nil {
				b.Fatal(err)
			}
			const block = 50
			var floor, ours time.Duration
			var n int
			for b.Loop() {
				start := time.Now()
				for range block {
					var ok bool
					if err := lock.QueryRowContext(ctx, id).Scan(&ok); err != nil || !ok {
						b.Fatal(ok, err)
					}
					if err := unlock.QueryRowContext(ctx, id).Scan(&ok); err != nil || !ok {
						b.Fatal(ok, err)
					}
				}
				mid := time.Now()
				for range block {
					l, err := m.TryLock(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if err := l.Unlock(ctx); err != nil {
						b.Fatal(err)
					}
				}
				floor += mid.Sub(start)
				ours += time.Since(mid)
				n += block
			}
			b.ReportMetric(float64(floor.Nanoseconds())/float64(n), "floor-ns/op")
			b.ReportMetric(float64(ours.Nanoseconds())/float64(n), "mutex-ns/op")
			b.ReportMetric(float64(ours)/float64(floor), "x-floor")
		})
	}
}

// BenchmarkHandoff measures the time from a holder's Unlock to a waiter of
// another client holding the key: the NOTIFY path. It reports the median.
func BenchmarkHandoff(b *testing.B) {
	dsn := testserver.PostgresDSN(b)
	ctx := context.Background()
	open := func() *mutex.Client {
		pc, err := postgres.NewConnector(dsn, postgres.WithNamespace(b.Name()))
		if err != nil {
			b.Fatal(err)
		}
		c := mutex.OpenConnector(pc)
		if err := c.Ping(ctx); err != nil {
			b.Fatal(err)
		}
		return c
	}
	a, w := open(), open()
	defer a.Close()
	defer w.Close()
	ma, mw := a.NewMutex("k"), w.NewMutex("k")
	var samples []time.Duration
	for b.Loop() {
		l, err := ma.Lock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		got := make(chan time.Time, 1)
		go func() {
			l2, err := mw.Lock(ctx)
			if err != nil {
				b.Error(err)
			}
			got <- time.Now()
			l2.Unlock(ctx)
		}()
		time.Sleep(5 * time.Millisecond) // the waiter is waiting, its interest tag in place
		start := time.Now()
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, (<-got).Sub(start))
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds()), "median-µs")
	b.ReportMetric(float64(samples[len(samples)*9/10].Microseconds()), "p90-µs")
}
