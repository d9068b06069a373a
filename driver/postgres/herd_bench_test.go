package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// herdDB is the database BenchmarkHerd's clients use alone, so that the
// server's transaction count for it (pg_stat_database) is theirs.
const herdDB = "mutexkit_herd"

// BenchmarkHerd is the wait queue's cost: N clients (each with its own
// connections, like N pods) loop Lock, hold 1 ms, Unlock on one key. It
// reports the server's transactions per handoff (xact_commit +
// xact_rollback of a database only they use, read once their backends
// have exited and flushed their counts; the clients' connects are
// included), the median handoff (Unlock to the next Lock returning) and
// the most grants a Lock saw go to others while it waited.
func BenchmarkHerd(b *testing.B) {
	dsn := testserver.PostgresDSN(b)
	admin, err := sql.Open("postgres", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	var exists bool
	admin.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, herdDB).Scan(&exists)
	if !exists {
		if _, err := admin.Exec(`CREATE DATABASE ` + herdDB); err != nil {
			b.Skipf("cannot create the database %s: %v", herdDB, err)
		}
	}
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		b.Skip("BenchmarkHerd needs a URL DSN")
	}
	u.Path = "/" + herdDB
	herdDSN := u.String()
	for _, n := range []int{8, 32} {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			for b.Loop() {
				herdRun(b, admin, herdDSN, n, 3*time.Second)
			}
		})
	}
}

func herdRun(b *testing.B, admin *sql.DB, dsn string, n int, d time.Duration) {
	ctx := context.Background()
	xacts := func() int64 {
		// No backend of the database left: each flushed its counts as it exited.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var left int
			admin.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, herdDB).Scan(&left)
			if left == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		var x int64
		if err := admin.QueryRow(`SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1`, herdDB).Scan(&x); err != nil {
			b.Fatal(err)
		}
		return x
	}
	before := xacts()
	clients := make([]*mutex.Client, n)
	for i := range clients {
		pc, err := postgres.NewConnector(dsn, postgres.WithNamespace("herd"))
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = mutex.NewClient(pc)
		if err := clients[i].Ping(ctx); err != nil {
			b.Fatal(err)
		}
	}
	var (
		grants   atomic.Int64
		released atomic.Int64 // UnixNano of the last Unlock
		mu       sync.Mutex
		handoffs []time.Duration
		passed   int64
		wg       sync.WaitGroup
	)
	stop := time.Now().Add(d)
	for _, c := range clients {
		m := c.NewMutex("k")
		wg.Go(func() {
			for time.Now().Before(stop) {
				seen := grants.Load()
				l, err := m.Lock(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				got := time.Now()
				g := grants.Add(1)
				mu.Lock()
				if r := released.Load(); r != 0 {
					handoffs = append(handoffs, got.Sub(time.Unix(0, r)))
				}
				passed = max(passed, g-seen-1)
				mu.Unlock()
				time.Sleep(time.Millisecond)
				released.Store(time.Now().UnixNano())
				if err := l.Unlock(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, c := range clients {
		c.Close()
	}
	total := xacts() - before
	slices.Sort(handoffs)
	h := grants.Load()
	b.ReportMetric(float64(total)/float64(h), "xacts/handoff")
	b.ReportMetric(float64(h)/d.Seconds(), "handoffs/s")
	if len(handoffs) > 0 {
		b.ReportMetric(float64(handoffs[len(handoffs)/2].Microseconds()), "median-µs")
		b.ReportMetric(float64(handoffs[len(handoffs)*99/100].Microseconds()), "p99-µs")
	}
	b.ReportMetric(float64(passed), "max-passed")
}
