package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// floor is what an uncontended TryLock+Unlock cannot do with less:
// prepared pg_try_advisory_lock and pg_advisory_unlock on a pinned
// connection, one round trip each.
type floor struct {
	lock, unlock *sql.Stmt
	id           int64
}

func newFloor(b *testing.B, dsn string) *floor {
	ctx := context.Background()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	conn, err := db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	f := &floor{id: postgres.KeyID(b.Name(), "floor")}
	if f.lock, err = conn.PrepareContext(ctx, `SELECT pg_try_advisory_lock($1)`); err != nil {
		b.Fatal(err)
	}
	if f.unlock, err = conn.PrepareContext(ctx, `SELECT pg_advisory_unlock($1)`); err != nil {
		b.Fatal(err)
	}
	return f
}

func (f *floor) lockUnlock(b *testing.B) {
	ctx := context.Background()
	var ok bool
	if err := f.lock.QueryRowContext(ctx, f.id).Scan(&ok); err != nil || !ok {
		b.Fatal(ok, err)
	}
	if err := f.unlock.QueryRowContext(ctx, f.id).Scan(&ok); err != nil || !ok {
		b.Fatal(ok, err)
	}
}

// ourMutex is a Mutex of a connected client of this driver.
func ourMutex(b *testing.B, dsn string, fencing bool) *mutex.Mutex {
	conn, err := postgres.NewConnector(dsn, postgres.WithNamespace(b.Name()))
	if err != nil {
		b.Fatal(err)
	}
	c := mutex.NewClient(conn)
	b.Cleanup(func() { c.Close() })
	if err := c.Ping(context.Background()); err != nil {
		b.Fatal(err)
	}
	if fencing {
		return c.NewMutex("k", mutex.WithFencing())
	}
	return c.NewMutex("k")
}

func tryLockUnlock(b *testing.B, m *mutex.Mutex) {
	ctx := context.Background()
	l, err := m.TryLock(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFloor is the floor alone.
func BenchmarkFloor(b *testing.B) {
	f := newFloor(b, testserver.PostgresDSN(b))
	b.ReportAllocs()
	for b.Loop() {
		f.lockUnlock(b)
	}
}

// BenchmarkTryLockUnlock is the same through package mutex and this
// driver, with fencing off and on.
func BenchmarkTryLockUnlock(b *testing.B) {
	dsn := testserver.PostgresDSN(b)
	for _, fencing := range []bool{false, true} {
		b.Run(fmt.Sprintf("fencing=%v", fencing), func(b *testing.B) {
			m := ourMutex(b, dsn, fencing)
			b.ReportAllocs()
			for b.Loop() {
				tryLockUnlock(b, m)
			}
		})
	}
}

// BenchmarkVersusFloor alternates blocks of the floor and of
// TryLock+Unlock through mutex on the same machine moments apart, so a
// shared, noisy machine loads both alike, and reports their ratio.
func BenchmarkVersusFloor(b *testing.B) {
	dsn := testserver.PostgresDSN(b)
	f := newFloor(b, dsn)
	for _, fencing := range []bool{false, true} {
		b.Run(fmt.Sprintf("fencing=%v", fencing), func(b *testing.B) {
			m := ourMutex(b, dsn, fencing)
			const block = 50
			var floorTime, ours time.Duration
			var n int
			for b.Loop() {
				start := time.Now()
				for range block {
					f.lockUnlock(b)
				}
				mid := time.Now()
				for range block {
					tryLockUnlock(b, m)
				}
				floorTime += mid.Sub(start)
				ours += time.Since(mid)
				n += block
			}
			b.ReportMetric(float64(floorTime.Nanoseconds())/float64(n), "floor-ns/op")
			b.ReportMetric(float64(ours.Nanoseconds())/float64(n), "mutex-ns/op")
			b.ReportMetric(float64(ours)/float64(floorTime), "x-floor")
		})
	}
}

// BenchmarkHandoff measures the time from a holder's Unlock to a waiter of
// another client holding the key: the server grants it to the waiter
// session. It reports the median.
func BenchmarkHandoff(b *testing.B) {
	dsn := testserver.PostgresDSN(b)
	ctx := context.Background()
	open := func() *mutex.Client {
		pc, err := postgres.NewConnector(dsn, postgres.WithNamespace(b.Name()))
		if err != nil {
			b.Fatal(err)
		}
		c := mutex.NewClient(pc)
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
		time.Sleep(5 * time.Millisecond) // the waiter is waiting in the server
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
