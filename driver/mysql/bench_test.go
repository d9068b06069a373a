package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/mysql"
	"github.com/mutexkit/mutexkit/mutex"
)

// BenchmarkHandoff: N clients (each with its own connections, like N
// pods) take one key in turn; each holder keeps it 1 ms and asks again at
// once, so N-1 always wait (issue 14's setup). b.N is the number of
// grants. Reported: server statements per handoff (the server's
// Questions counter: every statement of every client), the median and
// p99 handoff (release to the next Lock returning), and the longest wait
// in handoffs passed over.
//
//	go test -run '^$' -bench Handoff -benchtime 400x
func BenchmarkHandoff(b *testing.B) {
	dsn, admin := testDSN(b)
	for _, wait := range []string{"server", "poll"} {
		for _, n := range []int{8, 32} {
			b.Run(fmt.Sprintf("wait=%s/waiters=%d", wait, n), func(b *testing.B) {
				benchHandoff(b, dsn, admin, n, wait == "server")
			})
		}
	}
}

func benchHandoff(b *testing.B, dsn string, admin *sql.DB, n int, serverWait bool) {
	ns := uniqueNamespace(b)
	clients := make([]*mutex.Client, n)
	for i := range clients {
		conn, err := mysql.NewConnector(dsn, mysql.WithNamespace(ns), mysql.WithServerWait(serverWait))
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = mutex.NewClient(conn)
		defer clients[i].Close()
		if err := clients[i].Ping(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
	var (
		grants    atomic.Int64
		released  atomic.Int64 // UnixNano of the last release; 0: none yet
		mu        sync.Mutex
		handoffs  []time.Duration
		maxPassed int64 // the most grants to others during one Lock: n-1 is fair
		wg        sync.WaitGroup
	)
	total := int64(b.N)
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	q0 := questions(b, admin)
	b.ResetTimer()
	start := time.Now()
	for _, c := range clients {
		wg.Go(func() {
			m := c.NewMutex("handoff")
			for grants.Load() < total {
				began := grants.Load()
				l, err := m.Lock(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				now := time.Now()
				g := grants.Add(1)
				if r := released.Load(); r != 0 {
					mu.Lock()
					handoffs = append(handoffs, now.Sub(time.Unix(0, r)))
					if p := g - 1 - began; p > maxPassed {
						maxPassed = p
					}
					mu.Unlock()
				}
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
	elapsed := time.Since(start)
	b.StopTimer()
	q1 := questions(b, admin)
	slices.Sort(handoffs)
	if len(handoffs) == 0 {
		return
	}
	b.ReportMetric(float64(q1-q0-1)/float64(len(handoffs)), "stmts/handoff")
	b.ReportMetric(float64(handoffs[len(handoffs)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(handoffs[len(handoffs)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(maxPassed), "max-grants-waited")
	b.ReportMetric(float64(len(handoffs))/elapsed.Seconds(), "handoffs/s")
}

// questions reads the server's count of statements from clients.
func questions(b *testing.B, admin *sql.DB) int64 {
	var name string
	var v int64
	if err := admin.QueryRow(`SHOW GLOBAL STATUS LIKE 'Questions'`).Scan(&name, &v); err != nil {
		b.Fatal(err)
	}
	return v
}
