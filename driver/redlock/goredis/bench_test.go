package goredis_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/mutex"
)

// BenchmarkTryLockUnlock: uncontended TryLock then Unlock through mutex on
// one node, go-redis beside redigo (the DSN's defaults) on one server:
// go-redis with the options the tests use (ContextTimeoutEnabled, so the
// node timeout bounds each call, and no retries) and with its defaults.
// A quick check of the transport's cost; bench/ holds the figures.
func BenchmarkTryLockUnlock(b *testing.B) {
	ns := startNodes(b, 1)
	for _, tc := range []struct {
		name string
		cl   func() *mutex.Client
	}{
		{"redigo", func() *mutex.Client { return mutex.NewClient(redigoConnector(b, ns)) }},
		{"go-redis", func() *mutex.Client { return mutex.NewClient(ns.connector()) }},
		{"go-redis-defaults", func() *mutex.Client {
			return mutex.NewClient(goredis.FromClients(ns.clients(true), redlock.WithPrefix(ns.prefix)))
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cl := tc.cl()
			defer cl.Close()
			m := cl.NewMutex("bench", mutex.WithTTL(10*time.Second))
			ctx := context.Background()
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

// BenchmarkParallelDistinctKeys: 64 goroutines of one client lock keys of
// their own on one node (throughput): redigo's pipelined calls beside
// go-redis's pooled ones.
func BenchmarkParallelDistinctKeys(b *testing.B) {
	ns := startNodes(b, 1)
	for _, tc := range []struct {
		name string
		cl   func() *mutex.Client
	}{
		{"redigo", func() *mutex.Client { return mutex.NewClient(redigoConnector(b, ns)) }},
		{"go-redis", func() *mutex.Client { return mutex.NewClient(ns.connector()) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cl := tc.cl()
			defer cl.Close()
			var next atomic.Int64
			b.SetParallelism(32) // 64 goroutines on 2 CPUs
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				m := cl.NewMutex(fmt.Sprint("k", next.Add(1)), mutex.WithTTL(10*time.Second))
				ctx := context.Background()
				for pb.Next() {
					l, err := m.TryLock(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					if err := l.Unlock(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
