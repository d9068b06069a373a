package goredis_test

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

const ttl = 10 * time.Second

// TestInteropExclusion: a go-redis client and a redigo client on one key
// exclude each other (one lock record, one set of scripts), on one node
// and on three: a shared counter, checked under -race, never sees two
// holders, and each refuses while the other holds.
func TestInteropExclusion(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprint(n, "nodes"), func(t *testing.T) {
			ns := startNodes(t, n)
			lockers := []driver.Locker{ns.locker(), ns.redigo()}
			for i, l := range lockers {
				other := lockers[1-i]
				owner := driver.NewOwner()
				if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "x", Owner: owner, TTL: ttl}); err != nil {
					t.Fatal(err)
				}
				if _, err := other.Acquire(t.Context(), driver.AcquireRequest{Key: "x", Owner: driver.NewOwner(), TTL: ttl}); !errors.Is(err, driver.ErrLocked) {
					t.Fatalf("locker %d holds; the other's acquire: %v; want ErrLocked", i, err)
				}
				if err := other.Release(t.Context(), "x", driver.NewOwner()); !errors.Is(err, driver.ErrNotHeld) {
					t.Fatalf("release by a stranger: %v; want ErrNotHeld", err)
				}
				if err := l.Release(t.Context(), "x", owner); err != nil {
					t.Fatal(err)
				}
			}

			var (
				inside, entries int // guarded by the lock under test alone
				wg              sync.WaitGroup
			)
			for i := range 8 {
				cl := mutex.NewClient(ns.connector())
				if i%2 == 1 {
					cl = mutex.NewClient(redigoConnector(t, ns))
				}
				t.Cleanup(func() { cl.Close() })
				wg.Go(func() {
					for range 25 {
						l, err := cl.NewMutex("counter", mutex.WithTTL(ttl)).Lock(t.Context())
						if err != nil {
							t.Error(err)
							return
						}
						inside++
						if inside != 1 {
							t.Errorf("%d holders at once", inside)
						}
						entries++
						inside--
						if err := l.Unlock(t.Context()); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			if entries != 8*25 {
				t.Fatalf("%d entries; want %d", entries, 8*25)
			}
		})
	}
}

// TestInteropInspect: the redigo driver's Inspect, and mutex.Open's with a
// DSN (what mutexkit status runs), read a go-redis holder's record: its
// owner, host and fencing token; and go-redis's Inspect reads redigo's.
func TestInteropInspect(t *testing.T) {
	ns := startNodes(t, 1)
	g, r := ns.locker(), ns.redigo()
	for _, tc := range []struct {
		name         string
		holder, read driver.Locker
	}{{"go-redis holds", g, r}, {"redigo holds", r, g}} {
		t.Run(tc.name, func(t *testing.T) {
			owner := driver.NewOwner()
			grant, err := tc.holder.Acquire(t.Context(), driver.AcquireRequest{Key: "i", Owner: owner, TTL: ttl, Fencing: true,
				Holder: driver.Holder{Host: "h-" + tc.name[:2], PID: 4242}})
			if err != nil {
				t.Fatal(err)
			}
			h, held, err := tc.read.Inspect(t.Context(), "i")
			if err != nil || !held || h.Host != "h-"+tc.name[:2] || h.PID != 4242 || h.Token != grant.Token {
				t.Fatalf("Inspect: %+v held %v, %v; want host h-%s, pid 4242, token %d", h, held, err, tc.name[:2], grant.Token)
			}
			if err := tc.holder.Release(t.Context(), "i", owner); err != nil {
				t.Fatal(err)
			}
		})
	}

	// What mutexkit status does: mutex.Open with the DSN, then Inspect.
	cl, err := mutex.Open("redis://" + ns.servers[0].Addr() + "?prefix=" + ns.prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	m, err := mutex.NewClient(ns.connector()).NewMutex("s", mutex.WithTTL(ttl)).Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unlock(t.Context())
	h, held, err := cl.Inspect(t.Context(), "s")
	if err != nil || !held || h.PID != os.Getpid() {
		t.Fatalf("status's Inspect: %+v held %v, %v; want this process, the go-redis holder", h, held, err)
	}
}

func redigoConnector(t testing.TB, ns *nodes) driver.Connector {
	t.Helper()
	dsn := "redis://"
	for i, s := range ns.servers {
		if i > 0 {
			dsn += ","
		}
		dsn += s.Addr()
	}
	c, err := redlock.NewConnector(dsn + "?prefix=" + ns.prefix)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
