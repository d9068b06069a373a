package goredis_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// A Sentinel-managed master with one replica: what a failover does to a
// lock, without and with WithReplicaAcks. The servers are the test's own
// (testserver.StartRedisSentinel); the clients are go-redis
// FailoverClients, as an application has them.

// sentinelLocker connects a Locker over a fresh FailoverClient of s,
// closed (Locker, then client) when the test ends.
func sentinelLocker(t *testing.T, s *testserver.RedisSentinel, prefix string, opts ...redlock.Option) driver.Locker {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            s.MasterName(),
		SentinelAddrs:         s.SentinelAddrs(),
		ContextTimeoutEnabled: true,
		DialTimeout:           time.Second,
	})
	t.Cleanup(func() { c.Close() })
	return connectT(t, goredis.FromClient(c, append([]redlock.Option{redlock.WithPrefix(prefix)}, opts...)...))
}

// lockOwner returns the owner in key's lock record on the server at addr,
// "" if there is none.
func lockOwner(t *testing.T, addr, prefix, key string) string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	lock := redlock.LockKey(prefix, key)
	v, err := c.Get(t.Context(), lock).Result()
	if err != nil && strings.Contains(err.Error(), "WRONGTYPE") { // one server's list: its head's lease
		var head string
		if head, err = c.LIndex(t.Context(), lock, 0).Result(); err == nil {
			v, err = c.Get(t.Context(), lock+":l:"+head).Result()
		}
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	return v[:min(len(v), 32)]
}

const sentinelTTL = time.Minute // no lease ends by itself during a test

func acquireT(ctx context.Context, l driver.Locker, key string, owner driver.Owner) error {
	_, err := l.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: owner, TTL: sentinelTTL})
	return err
}

// TestSentinelFailoverLosesLock: without WithReplicaAcks, a lock granted
// while the replica lags is gone after the failover: a second client is
// granted the key while the first still holds a valid grant, and the first
// learns it only at its next renewal (ErrNotHeld).
func TestSentinelFailoverLosesLock(t *testing.T) {
	s := testserver.StartRedisSentinel(t)
	prefix := "s" + driver.NewOwner().String()[:12]
	first := sentinelLocker(t, s, prefix)
	me := driver.NewOwner()

	s.PauseReplication() // resumed when the test ends
	if err := acquireT(t.Context(), first, "job", me); err != nil {
		t.Fatalf("Acquire with replication paused, no replica acks asked: %v", err)
	}
	granted := time.Now()
	s.KillMaster()

	second := sentinelLocker(t, s, prefix)
	if err := acquireT(t.Context(), second, "job", driver.NewOwner()); err != nil {
		t.Fatalf("a second client's Acquire after the failover: %v; the lost lock was expected to be granted again", err)
	}
	if since := time.Since(granted); since >= sentinelTTL/2 {
		t.Fatalf("the failover took %v: the first grant may have run out", since)
	}
	t.Logf("two holders of one key: the first's grant (TTL %v) was lost with the master", sentinelTTL)

	// The first client's FailoverClient finds the new master after a
	// moment (it refuses or times out meanwhile); then its renewal says
	// the lease is gone.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		batch := []driver.Renewal{{Key: "job", Owner: me, TTL: sentinelTTL}}
		first.Renew(ctx, batch)
		if errors.Is(batch[0].Err, driver.ErrNotHeld) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the first client's renewal after the failover: %v; want ErrNotHeld", batch[0].Err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSentinelReplicaAcks: with WithReplicaAcks(1, ...), an acquire while
// the replica lags is refused (and given back), a renewal fails, and a lock
// granted while replication worked survives the failover: the promoted
// replica has it, and a second client is refused.
func TestSentinelReplicaAcks(t *testing.T) {
	s := testserver.StartRedisSentinel(t)
	prefix := "s" + driver.NewOwner().String()[:12]
	acks := redlock.WithReplicaAcks(1, 500*time.Millisecond)
	first := sentinelLocker(t, s, prefix, acks)
	me := driver.NewOwner()

	if err := acquireT(t.Context(), first, "kept", me); err != nil {
		t.Fatalf("Acquire with the replica in sync: %v", err)
	}
	if got := lockOwner(t, s.Replica().Addr(), prefix, "kept"); got != me.String() {
		t.Fatalf("once the acquire returned, the replica has owner %q; want %s", got, me)
	}

	master := s.Master().Addr()
	s.PauseReplication() // resumed when the test ends; the master dies within 5 s
	err := acquireT(t.Context(), first, "refused", driver.NewOwner())
	if !errors.Is(err, redlock.ErrNotReplicated) || !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("Acquire with replication paused: %v; want ErrNotReplicated and ErrUnavailable", err)
	}
	if got := lockOwner(t, master, prefix, "refused"); got != "" {
		t.Fatalf("the refused grant was not given back: the master has owner %q", got)
	}
	batch := []driver.Renewal{{Key: "kept", Owner: me, TTL: sentinelTTL}}
	first.Renew(t.Context(), batch)
	if err := batch[0].Err; !errors.Is(err, redlock.ErrNotReplicated) || errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("Renew with replication paused: %v; want ErrNotReplicated, not ErrNotHeld", err)
	}

	s.KillMaster()
	second := sentinelLocker(t, s, prefix)
	if err := acquireT(t.Context(), second, "kept", driver.NewOwner()); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("a second client's Acquire of the acknowledged lock after the failover: %v; want ErrLocked", err)
	}
	if err := acquireT(t.Context(), second, "refused", driver.NewOwner()); err != nil {
		t.Fatalf("Acquire of the key whose grant was refused: %v; nobody holds it", err)
	}
}

// TestReplicaAcksRefusedOnCluster: a Redis Cluster client would send a
// keyless WAIT to another node than the write's, where it counts nothing:
// WithReplicaAcks over one is refused at Connect (no I/O needed).
func TestReplicaAcksRefusedOnCluster(t *testing.T) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cc.Close()
	l, err := goredis.FromClient(cc, redlock.WithReplicaAcks(1, time.Second)).Connect(t.Context())
	if !errors.Is(err, driver.ErrInvalid) {
		if l != nil {
			l.Close()
		}
		t.Fatalf("Connect with WithReplicaAcks over a cluster client: %v; want ErrInvalid", err)
	}
	l, err = goredis.FromClient(cc).Connect(t.Context())
	if err != nil {
		t.Fatalf("Connect over a cluster client without the option: %v", err)
	}
	l.Close()

	// Nor over a client whose routing the driver cannot know: a type of
	// the application's wrapping a cluster client, or a FailoverClient
	// routing by latency (a cluster client over the sentinels' nodes).
	fc := redis.NewFailoverClusterClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}, RouteByLatency: true})
	defer fc.Close()
	for name, c := range map[string]redis.UniversalClient{"wrapped cluster client": wrappedClient{cc}, "FailoverClusterClient": fc} {
		l, err := goredis.FromClient(c, redlock.WithReplicaAcks(1, time.Second)).Connect(t.Context())
		if !errors.Is(err, driver.ErrInvalid) {
			if l != nil {
				l.Close()
			}
			t.Errorf("Connect with WithReplicaAcks over a %s: %v; want ErrInvalid", name, err)
		}
	}
}

// wrappedClient is an application's type around a go-redis client.
type wrappedClient struct{ redis.UniversalClient }

// TestReplicaAcksWritesConnection: WAIT counts the writes of its own
// connection, so it must follow the grant or renewal on the connection
// that sent it. MONITOR on the master shows each command with its
// client's address: every WAIT's client sent a lock write (SET, EVALSHA
// or EVAL) just before it.
func TestReplicaAcksWritesConnection(t *testing.T) {
	servers := testserver.StartRedis(t, 2, testserver.WithRedisArgs("--repl-diskless-sync-delay", "0"))
	master, replica := servers[0], servers[1]
	host, port, _ := strings.Cut(master.Addr(), ":")
	admin := redis.NewClient(&redis.Options{Addr: replica.Addr(), MaxRetries: -1})
	defer admin.Close()
	if err := admin.Do(t.Context(), "REPLICAOF", host, port).Err(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: master.Addr(), ContextTimeoutEnabled: true})
	defer c.Close()
	for deadline := time.Now().Add(20 * time.Second); c.Do(t.Context(), "WAIT", 1, 100).Val() != int64(1); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the replica did not come online")
		}
	}

	mon, err := net.DialTimeout("tcp", master.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	mon.SetDeadline(time.Now().Add(30 * time.Second))
	lines := bufio.NewReader(mon)
	if _, err := mon.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if ok, err := lines.ReadString('\n'); err != nil || ok != "+OK\r\n" {
		t.Fatalf("MONITOR: %q, %v", ok, err)
	}

	prefix := "w" + driver.NewOwner().String()[:12]
	l := connectT(t, goredis.FromClient(c, redlock.WithPrefix(prefix), redlock.WithReplicaAcks(1, 2*time.Second)))
	me := driver.NewOwner()
	if err := acquireT(t.Context(), l, "plain", me); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "fenced", Owner: driver.NewOwner(), TTL: sentinelTTL, Fencing: true}); err != nil {
		t.Fatalf("Acquire (fenced): %v", err)
	}
	for range 2 { // the first may meet NOSCRIPT: EVAL, WAIT again
		batch := []driver.Renewal{{Key: "plain", Owner: me, TTL: sentinelTTL}}
		if l.Renew(t.Context(), batch); batch[0].Err != nil {
			t.Fatalf("Renew: %v", batch[0].Err)
		}
	}

	// Read until the last renewal's WAIT: at least one WAIT per acquire
	// and per renewal.
	last := map[string]string{} // client address -> its last command before the WAIT
	waits := 0
	for waits < 4 {
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("MONITOR after %d WAIT: %v", waits, err)
		}
		// +1700000000.000000 [0 127.0.0.1:50000] "SET" "key" ...
		_, rest, ok1 := strings.Cut(line, " [")
		client, rest, ok2 := strings.Cut(rest, "] \"")
		cmd, _, ok3 := strings.Cut(rest, "\"")
		if !ok1 || !ok2 || !ok3 {
			continue
		}
		_, client, _ = strings.Cut(client, " ") // the db first
		cmd = strings.ToUpper(cmd)
		if cmd == "WAIT" {
			waits++
			if prev := last[client]; prev != "SET" && prev != "EVALSHA" && prev != "EVAL" {
				t.Fatalf("WAIT %d from %s, whose command before it was %q: not on the write's connection", waits, client, prev)
			}
		}
		last[client] = cmd
	}
}
