package redlock_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// startReplicated starts a master and a replica of it, waits until the
// replica is in sync, and returns a cluster over the master alone (the
// DSN's one node) and the replica.
func startReplicated(t *testing.T) (*cluster, *testserver.Redis) {
	t.Helper()
	servers := testserver.StartRedis(t, 2, testserver.WithRedisArgs("--repl-diskless-sync-delay", "0"))
	c := newCluster(t, servers[:1])
	replica := newCluster(t, servers[1:])
	host, port, _ := net.SplitHostPort(servers[0].Addr())
	if _, err := replica.do(0, "REPLICAOF", host, port); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := redis.String(c.do(0, "INFO", "replication"))
		if err == nil && strings.Contains(info, "state=online") {
			return c, servers[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not sync: %v\n%s", err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waits returns how many WAIT commands the server ran.
func waits(t *testing.T, c *cluster) int {
	t.Helper()
	info, err := redis.String(c.do(0, "INFO", "commandstats"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_wait:calls="); ok {
			var n int
			fmt.Sscanf(rest, "%d", &n)
			return n
		}
	}
	return 0
}

// TestReplicaAcks: with replica_acks an acquire and a renewal are
// followed by WAIT, on a pooled connection or the pipe's transport alike;
// a grant the replicas did not acknowledge is refused and given back, and
// a renewal they did not acknowledge fails.
func TestReplicaAcks(t *testing.T) {
	c, replica := startReplicated(t)
	rc := newCluster(t, []*testserver.Redis{replica})
	rc.prefix = c.prefix
	for _, pipe := range []string{"pipeline=0", "pipeline=1"} {
		t.Run(pipe, func(t *testing.T) {
			l := c.locker(pipe, "replica_acks=1", "replica_acks_timeout=2s")
			for _, fenced := range []bool{false, true} {
				key, me := fmt.Sprintf("%s-%v", pipe, fenced), driver.NewOwner()
				before := waits(t, c)
				if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: me, TTL: ttl, Fencing: fenced}); err != nil {
					t.Fatalf("Acquire (fenced %v) with a replica in sync: %v", fenced, err)
				}
				if n := waits(t, c) - before; n < 1 {
					t.Errorf("the acquire sent %d WAIT", n)
				}
				if got := rc.owner(0, key); got != me.String() {
					t.Errorf("once the acquire returned, the replica has owner %q; want %s", got, me)
				}
				// The first renewal may meet NOSCRIPT (then EVAL, WAIT again);
				// the second is one round trip for the batch, one WAIT.
				for range 2 {
					batch := []driver.Renewal{{Key: key, Owner: me, TTL: ttl}, {Key: key + "-gone", Owner: me, TTL: ttl}}
					before = waits(t, c)
					if l.Renew(t.Context(), batch); batch[0].Err != nil || !errors.Is(batch[1].Err, driver.ErrNotHeld) {
						t.Fatalf("Renew with a replica in sync: %v, %v", batch[0].Err, batch[1].Err)
					}
				}
				if n := waits(t, c) - before; n != 1 {
					t.Errorf("the renewal of a batch sent %d WAIT; want 1", n)
				}
				if err := l.Release(t.Context(), key, me); err != nil {
					t.Fatal(err)
				}
			}

			// Two replicas asked, one there: refused, and given back.
			l2 := c.locker(pipe, "replica_acks=2", "replica_acks_timeout=50ms")
			for _, fenced := range []bool{false, true} {
				key := fmt.Sprintf("%s-%v-two", pipe, fenced)
				_, err := l2.Acquire(t.Context(), driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), TTL: ttl, Fencing: fenced})
				if !errors.Is(err, redlock.ErrNotReplicated) || !errors.Is(err, driver.ErrUnavailable) {
					t.Fatalf("Acquire (fenced %v) asking 2 replicas of 1: %v; want ErrNotReplicated and ErrUnavailable", fenced, err)
				}
				if got := c.owner(0, key); got != "" {
					t.Errorf("the refused grant was not given back: the master has owner %q", got)
				}
				// Nobody holds it: a Locker asking one replica gets it.
				if _, err := acquire(t, l, key, driver.NewOwner()); err != nil {
					t.Errorf("Acquire after the refused grant: %v", err)
				}
			}
		})
	}

	// The replica stops acknowledging: a renewal fails, the lease stays
	// as far as the master goes.
	l := c.locker("replica_acks=1", "replica_acks_timeout=50ms")
	me := driver.NewOwner()
	if _, err := acquire(t, l, "paused", me); err != nil {
		t.Fatal(err)
	}
	replica.Pause()
	defer replica.Resume()
	batch := []driver.Renewal{{Key: "paused", Owner: me, TTL: ttl}}
	l.Renew(t.Context(), batch)
	if err := batch[0].Err; !errors.Is(err, redlock.ErrNotReplicated) || !errors.Is(err, driver.ErrUnavailable) || errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Renew with the replica paused: %v; want ErrNotReplicated and ErrUnavailable, not ErrNotHeld", err)
	}
	if _, err := acquire(t, l, "paused-new", driver.NewOwner()); !errors.Is(err, redlock.ErrNotReplicated) {
		t.Fatalf("Acquire with the replica paused: %v; want ErrNotReplicated", err)
	}
}

// TestReplicaAcksTimeoutCapped: WAIT never waits longer than the lease it
// acknowledges could be of use, however long replica_acks_timeout is: with
// the replica paused, an acquire and a renewal return, refused, well
// before the caller's generous deadline, instead of blocking until it.
func TestReplicaAcksTimeoutCapped(t *testing.T) {
	c, replica := startReplicated(t)
	l := c.locker("replica_acks=1", "replica_acks_timeout=2562047h")
	me := driver.NewOwner()
	if _, err := acquire(t, l, "held", me); err != nil {
		t.Fatal(err)
	}
	// A first renewal may meet NOSCRIPT and WAIT twice: load the script
	// while the replica answers.
	warm := []driver.Renewal{{Key: "held", Owner: me, TTL: ttl}}
	if l.Renew(t.Context(), warm); warm[0].Err != nil {
		t.Fatal(warm[0].Err)
	}
	replica.Pause()
	defer replica.Resume()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	batch := []driver.Renewal{{Key: "held", Owner: me, TTL: ttl}}
	l.Renew(ctx, batch)
	if err := batch[0].Err; !errors.Is(err, redlock.ErrNotReplicated) || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		t.Fatalf("Renew with a WAIT of 2562047h, the replica paused: %v (caller's deadline: %v); want ErrNotReplicated within the lease's validity", err, ctx.Err())
	}
	_, err := l.Acquire(ctx, driver.AcquireRequest{Key: "new", Owner: driver.NewOwner(), TTL: ttl})
	if !errors.Is(err, redlock.ErrNotReplicated) || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		t.Fatalf("Acquire with a WAIT of 2562047h, the replica paused: %v (caller's deadline: %v); want ErrNotReplicated within the lease's validity", err, ctx.Err())
	}
}

// TestReplicaAcksOptions: bad values are refused as the other options'.
func TestReplicaAcksOptions(t *testing.T) {
	good := []string{"replica_acks=1", "replica_acks=2&replica_acks_timeout=250ms", "replica_acks_timeout=1ms&replica_acks=1", "replica_acks=0"}
	for _, q := range good {
		if _, err := redlock.NewConnector("redis://127.0.0.1:1?" + q); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
	bad := []string{"replica_acks=-1", "replica_acks=x", "replica_acks_timeout=1s", "replica_acks=1&replica_acks_timeout=500us", "replica_acks=1&replica_acks_timeout=0s"}
	for _, q := range bad {
		if _, err := redlock.NewConnector("redis://127.0.0.1:1?" + q); !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("%s: %v; want ErrInvalid", q, err)
		}
	}
	for _, o := range []redlock.Option{redlock.WithReplicaAcks(-1, time.Second), redlock.WithReplicaAcks(1, 0), redlock.WithReplicaAcks(1, time.Microsecond)} {
		if _, err := redlock.NewConnector("redis://127.0.0.1:1", o); !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("WithReplicaAcks: %v; want ErrInvalid", err)
		}
	}
	if _, err := redlock.NewConnector("redis://127.0.0.1:1", redlock.WithReplicaAcks(0, 0)); err != nil {
		t.Errorf("WithReplicaAcks(0, 0) (off): %v", err)
	}
}

// waitSpotter records whether WAIT was ever written on a socket.
type waitSpotter struct {
	net.Conn
	seen *atomic.Bool
}

func (c waitSpotter) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("WAIT")) {
		c.seen.Store(true)
	}
	return c.Conn.Write(b)
}

// TestReplicaAcksOffThePipe: a WAIT never goes on the pipelined
// connection, so a call on the pipe does not queue behind one: with the
// replica paused, a release through the pipe returns while an acquire
// waits for its acknowledgement.
func TestReplicaAcksOffThePipe(t *testing.T) {
	c, replica := startReplicated(t)
	var onPipe atomic.Bool
	conn, err := redlock.NewConnector(c.dsn("pipeline=1", "replica_acks=1", "replica_acks_timeout=10s"),
		redlock.WithPipeAlways(), redlock.WithConnWrapper(func(nc net.Conn) net.Conn { return waitSpotter{nc, &onPipe} }))
	l := connect(t, conn, err)
	if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "warm", Owner: driver.NewOwner(), TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	replica.Pause()
	defer replica.Resume()
	acquired := make(chan error, 1)
	go func() {
		_, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "slow", Owner: driver.NewOwner(), TTL: time.Minute})
		acquired <- err
	}()
	// Once the acquire's WAIT is under way on the server, a release
	// through the pipe.
	deadline := time.Now().Add(10 * time.Second)
	for !blockedOnWait(t, c) {
		if time.Now().After(deadline) {
			t.Fatal("the acquire's WAIT never blocked")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := l.Release(t.Context(), "other", driver.NewOwner()); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Release through the pipe: %v; want ErrNotHeld", err)
	}
	select {
	case err := <-acquired:
		t.Fatalf("the acquire returned (%v) before the release: the release waited behind it", err)
	default:
	}
	replica.Resume()
	if err := <-acquired; err != nil {
		t.Fatalf("Acquire once the replica resumed: %v", err)
	}
	if onPipe.Load() {
		t.Error("WAIT was written on the pipelined connection")
	}
}

// blockedOnWait reports whether a client of the server is blocked in WAIT.
func blockedOnWait(t *testing.T, c *cluster) bool {
	t.Helper()
	list, err := redis.String(c.do(0, "CLIENT", "LIST"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(list, "cmd=wait")
}

// TestReplicaAcksExclusion: Lock and Unlock by clients asking a replica's
// acknowledgement (the queue's scripts followed by WAIT) never let two
// holders in: a counter guarded by the lock alone, checked under -race.
func TestReplicaAcksExclusion(t *testing.T) {
	c, _ := startReplicated(t)
	var (
		inside, entries int
		wg              sync.WaitGroup
	)
	for range 4 {
		conn, err := redlock.NewConnector(c.dsn("replica_acks=1", "replica_acks_timeout=1s"))
		if err != nil {
			t.Fatal(err)
		}
		cl := mutex.NewClient(conn)
		t.Cleanup(func() { cl.Close() })
		wg.Go(func() {
			for range 10 {
				lease, err := cl.NewMutex("counter", mutex.WithTTL(5*time.Second)).Lock(t.Context())
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
				if err := lease.Unlock(t.Context()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if entries != 40 {
		t.Fatalf("%d entries; want 40", entries)
	}
}

// TestReplicaAcksRedlock: over three nodes without replicas every node's
// grant goes unacknowledged: the acquire fails with ErrNotReplicated, and
// the partial grants are taken back on every node.
func TestReplicaAcksRedlock(t *testing.T) {
	c := newCluster(t, startRedisArgs(t, 3, "--repl-diskless-sync-delay", "0")) // servers of its own: none has a replica
	l := c.locker("replica_acks=1", "replica_acks_timeout=20ms")
	_, err := acquire(t, l, "k", driver.NewOwner())
	if !errors.Is(err, redlock.ErrNotReplicated) || !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("Acquire over 3 nodes without replicas: %v; want ErrNotReplicated and ErrUnavailable", err)
	}
	for i := range c.servers {
		if got := c.owner(i, "k"); got != "" {
			t.Errorf("node %d keeps the unacknowledged grant (owner %q)", i, got)
		}
	}
}

// TestReplicaAcksLockWaits: Lock treats an unacknowledged grant as the
// backend being out of reach: it keeps trying until its ctx ends (saying
// so), leaves nothing held, and is granted once the replica answers again.
func TestReplicaAcksLockWaits(t *testing.T) {
	c, replica := startReplicated(t)
	conn, err := redlock.NewConnector(c.dsn("replica_acks=1", "replica_acks_timeout=50ms"))
	if err != nil {
		t.Fatal(err)
	}
	cl := mutex.NewClient(conn)
	defer cl.Close()
	replica.Pause()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	_, err = cl.NewMutex("job").Lock(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, mutex.ErrUnavailable) || !errors.Is(err, redlock.ErrNotReplicated) {
		t.Fatalf("Lock with the replica paused: %v; want the deadline, ErrUnavailable and ErrNotReplicated", err)
	}
	// No grant is left; at most the waiter's own place (a key kept for it,
	// "q <member>"), which the Lock's give-up releases in the background.
	if got := c.owner(0, "job"); got != "" && !strings.HasPrefix(got, "q ") {
		t.Fatalf("after the Lock gave up the master holds the key for %q", got)
	}
	for deadline := time.Now().Add(10 * time.Second); c.owner(0, "job") != ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the place the Lock gave up is still kept: %q", c.owner(0, "job"))
		}
	}
	replica.Resume()
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	lease, err := cl.NewMutex("job").Lock(ctx)
	if err != nil {
		t.Fatalf("Lock once the replica answers: %v", err)
	}
	if err := lease.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// cutAfterWrite is a socket that, once armed, lets the first read after
// a write holding WAIT through and then reads EOF, as if the server
// closed the connection between the write's reply and WAIT's.
type cutAfterWrite struct {
	net.Conn
	armed *atomic.Bool
	cut   atomic.Int32 // 1: WAIT written here; 2: one read since
}

func (c *cutAfterWrite) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("WAIT")) && c.armed.CompareAndSwap(true, false) {
		c.cut.Store(1)
	}
	return c.Conn.Write(b)
}

func (c *cutAfterWrite) Read(b []byte) (int, error) {
	switch c.cut.Load() {
	case 2:
		return 0, io.EOF
	case 1:
		c.cut.Store(2)
	}
	return c.Conn.Read(b)
}

// TestReplicaAcksBrokenBeforeWait: a connection the server closed after
// the grant's reply but before WAIT's is not tried again in part: a WAIT
// alone on a fresh connection counts none of the grant's writes (with the
// replica paused, it would say 1 at once). The grant is refused.
func TestReplicaAcksBrokenBeforeWait(t *testing.T) {
	c, replica := startReplicated(t)
	var armed atomic.Bool
	pool := &redis.Pool{Dial: func() (redis.Conn, error) {
		return redis.Dial("tcp", c.servers[0].Addr(), redis.DialNetDial(func(network, addr string) (net.Conn, error) {
			nc, err := net.Dial(network, addr)
			if err != nil {
				return nil, err
			}
			return &cutAfterWrite{Conn: nc, armed: &armed}, nil
		}))
	}}
	defer pool.Close()
	l := connect(t, redlock.FromPools([]*redis.Pool{pool}, redlock.WithPrefix(c.prefix), redlock.WithReplicaAcks(1, 5*time.Second)), nil)
	if _, err := acquire(t, l, "warm", driver.NewOwner()); err != nil {
		t.Fatal(err)
	}
	replica.Pause()
	defer replica.Resume()
	armed.Store(true)
	_, err := acquire(t, l, "k", driver.NewOwner())
	if !errors.Is(err, redlock.ErrNotReplicated) || !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("Acquire whose connection broke before WAIT's reply, replica paused: %v; want ErrNotReplicated and ErrUnavailable", err)
	}
	if armed.Load() {
		t.Fatal("no WAIT was sent")
	}
}
