package redlock_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

// listCluster is one server of the test's own, which the driver runs by
// the list protocol.
func listCluster(t *testing.T) *cluster {
	t.Helper()
	return startCluster(t, 1)
}

// members returns key's list on server 0.
func (c *cluster) members(t testing.TB, key string) []string {
	t.Helper()
	v, err := redis.Strings(c.do(0, "LRANGE", c.lockKey(key), 0, -1))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitMembers waits until key's list has n members.
func (c *cluster) waitMembers(t testing.TB, key string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := c.members(t, key)
		if len(m) == n {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("key's list has %d members 10s on; want %d", len(m), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// dataCommands returns how many commands server 0 ran since its stats
// were reset, but for the test's own (LRANGE, INFO, CONFIG, PUBSUB), the
// subscriptions' pings and a new connection's naming.
func (c *cluster) dataCommands(t testing.TB) (int, string) {
	t.Helper()
	info, err := redis.String(c.do(0, "INFO", "commandstats"))
	if err != nil {
		t.Fatal(err)
	}
	total, seen := 0, ""
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":calls=")
		if !ok || name == "ping" || name == "info" || name == "lrange" || strings.HasPrefix(name, "client|") || name == "config|resetstat" || name == "pubsub|channels" {
			continue
		}
		n, _ := strconv.Atoi(rest[:strings.IndexByte(rest+",", ',')])
		total += n
		seen += " " + name + "=" + strconv.Itoa(n)
	}
	return total, seen
}

// TestListLayout: the lock key is a list whose head holds it; each member
// has a lease key with its holder record.
func TestListLayout(t *testing.T) {
	c := listCluster(t)
	lease, err := c.client().NewMutex("k").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if typ, _ := redis.String(c.do(0, "TYPE", c.lockKey("k"))); typ != "list" {
		t.Fatalf("the lock key is a %s; want a list", typ)
	}
	m := c.members(t, "k")
	if len(m) != 1 {
		t.Fatalf("members %q; want one", m)
	}
	rec, err := redis.String(c.do(0, "GET", c.lockKey("k")+":l:"+m[0]))
	if err != nil || rec[:32] != m[0][:32] {
		t.Fatalf("the member's lease holds %q (%v); want its owner's record", rec, err)
	}
	if err := lease.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, _ := redis.Int(c.do(0, "EXISTS", c.lockKey("k"))); n != 0 {
		t.Fatal("the list outlives its last member")
	}
}

// TestListHandoffCommands: with waiters queued, a handoff (a release, the
// next waiter's grant, the releaser queueing again) costs the server five
// commands and no script: LREM and LINDEX, PUBLISH, and SET and RPUSH.
func TestListHandoffCommands(t *testing.T) {
	c := listCluster(t)
	if c.servers[0].External() {
		t.Skip("counts the server's commands: needs a server of its own")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	clients := []*mutex.Client{c.client(), c.client(), c.client()}
	first, err := clients[0].NewMutex("k").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *mutex.Lease, 3)
	lock := func(cl *mutex.Client) {
		l, err := cl.NewMutex("k").Lock(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}
	for _, cl := range clients[1:] {
		go lock(cl)
	}
	c.waitMembers(t, "k", 3)
	waitSubscribed(t, c, 3)
	if _, err := c.do(0, "CONFIG", "RESETSTAT"); err != nil {
		t.Fatal(err)
	}
	if err := first.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	next := <-got
	go lock(clients[0])
	c.waitMembers(t, "k", 3)
	if n, seen := c.dataCommands(t); n > 5 {
		t.Errorf("a handoff cost the server %d commands (%s); want 5", n, seen)
	}
	if err := next.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if l := <-got; l != nil {
			l.Unlock(ctx)
		}
	}
}

// waitSubscribed waits until n wake channels have a subscriber.
func waitSubscribed(t *testing.T, c *cluster, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		chans, err := redis.Strings(c.do(0, "PUBSUB", "CHANNELS", c.prefix+":wake:*"))
		if err != nil {
			t.Fatal(err)
		}
		if len(chans) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d wake channels subscribed 10s on; want %d", len(chans), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestListDeadWaiterPassedOver: a member whose lease lapsed (its process
// died while it waited) does not stall the waiters behind it once it comes
// to the head: they drop it.
func TestListDeadWaiterPassedOver(t *testing.T) {
	c := listCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	holder, err := c.client().NewMutex("k").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dead := strings.Repeat("ab", 16) + "0123456789abcdef" + "1"
	if _, err := c.do(0, "SET", c.lockKey("k")+":l:"+dead, strings.Repeat("ab", 16)+" 0 0 0 0 dead", "PX", 100); err != nil {
		t.Fatal(err)
	}
	if _, err := c.do(0, "RPUSH", c.lockKey("k"), dead); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := c.client().NewMutex("k").Lock(ctx)
		if err == nil {
			err = l.Unlock(ctx)
		}
		got <- err
	}()
	c.waitMembers(t, "k", 3)
	start := time.Now()
	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("the waiter behind a dead one got the key %v after the release", time.Since(start).Round(time.Millisecond))
	case <-time.After(2 * driver.QueueHold):
		t.Fatalf("the waiter behind a dead one did not get the key within %v of the release", 2*driver.QueueHold)
	}
}

// TestListStaleWakeIgnored: a wake-up that names another member of the
// waiter's (an earlier enqueue's, arriving late) grants nothing: only one
// naming the waiter's member does, and the release sends that.
func TestListStaleWakeIgnored(t *testing.T) {
	c := listCluster(t)
	ctx := t.Context()
	la, lb := c.locker(), c.locker()
	a, b := driver.NewOwner(), driver.NewOwner()
	req := func(o driver.Owner) driver.AcquireRequest {
		return driver.AcquireRequest{Key: "k", Owner: o, TTL: 10 * time.Second, Wait: true}
	}
	if _, err := la.Acquire(ctx, req(a)); err != nil {
		t.Fatal(err)
	}
	if _, err := lb.Acquire(ctx, req(b)); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiter: %v; want ErrLocked", err)
	}
	wake := watchQuiet(t, lb, 1, "k", b)
	if _, err := lb.Acquire(ctx, req(b)); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiter once subscribed: %v; want ErrLocked", err)
	}
	member := c.members(t, "k")[1]
	stale := member[:48] + "ffffff"
	if _, err := c.do(0, "PUBLISH", c.prefix+":wake:"+member[32:48], stale); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
		t.Fatal("a wake-up naming another member woke the waiter")
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := lb.Acquire(ctx, req(b)); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiter after a stale wake-up: %v; want ErrLocked", err)
	}
	if err := la.Release(ctx, "k", a); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("the release did not wake the waiter")
	}
	if _, err := lb.Acquire(ctx, req(b)); err != nil {
		t.Fatalf("the woken waiter: %v", err)
	}
	if _, err := la.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: a, TTL: time.Second}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("TryLock of the woken waiter's key: %v; want ErrLocked", err)
	}
	if err := lb.Release(ctx, "k", b); err != nil {
		t.Fatal(err)
	}
}

// TestListOtherLayout: a key stored as a string (a client of the earlier
// layout holds it) is refused as held, both ways.
func TestListOtherLayout(t *testing.T) {
	c := listCluster(t)
	if _, err := c.do(0, "SET", c.lockKey("k"), strings.Repeat("ab", 16)+" 0 0 0 0 old", "PX", 60000); err != nil {
		t.Fatal(err)
	}
	l := c.locker()
	for _, wait := range []bool{false, true} {
		_, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Second, Wait: wait})
		if !errors.Is(err, driver.ErrLocked) {
			t.Errorf("Acquire (wait %v) of a key held by the string layout: %v; want ErrLocked", wait, err)
		}
	}
	if _, held, err := l.Inspect(t.Context(), "k"); err != nil || !held {
		t.Errorf("Inspect of a key held by the string layout: held %v, %v", held, err)
	}
	if _, err := c.do(0, "DEL", c.lockKey("k")); err != nil {
		t.Fatal(err)
	}
	owner := driver.NewOwner()
	if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: owner, TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	conn, err := redlock.NewConnector(c.dsn()) // the string layout
	ol := connect(t, conn, err)
	if _, err := ol.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Second}); err == nil {
		t.Error("the string layout took a key the list layout holds")
	}
}

// TestListWokenHeadHolds: a release hands the key to the head of the
// list, which holds it before it asks anything: a TryLock or a
// newcomer's Lock is refused, Inspect reports the head's holder record,
// the previous holder can neither renew nor release it, and the head's
// next attempt is its grant.
func TestListWokenHeadHolds(t *testing.T) {
	c := listCluster(t)
	ctx := t.Context()
	holder, waiter, other := c.locker(), c.locker(), c.locker()
	h, w := driver.NewOwner(), driver.NewOwner()
	if _, err := acquire(t, holder, "k", h); err != nil {
		t.Fatal(err)
	}
	mustWaitLocked(t, waiter, "k", w)
	if err := holder.Release(ctx, "k", h); err != nil {
		t.Fatal(err)
	}
	if _, err := acquire(t, other, "k", driver.NewOwner()); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("TryLock of the head's key: %v; want ErrLocked", err)
	}
	if _, err := other.Acquire(ctx, driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: ttl, Fencing: true}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("fenced TryLock of the head's key: %v; want ErrLocked", err)
	}
	mustWaitLocked(t, other, "k", driver.NewOwner())
	if got := c.owner(0, "k"); got != w.String() {
		t.Fatalf("the key's holder record is %q's; want the head's, %s", got, w)
	}
	if _, held, err := other.Inspect(ctx, "k"); err != nil || !held {
		t.Fatalf("Inspect of the head's key: held %v, %v; want held", held, err)
	}
	batch := []driver.Renewal{{Key: "k", Owner: h, TTL: ttl}}
	holder.Renew(ctx, batch)
	if !errors.Is(batch[0].Err, driver.ErrNotHeld) {
		t.Fatalf("Renew by the previous holder: %v; want ErrNotHeld", batch[0].Err)
	}
	if err := holder.Release(ctx, "k", h); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("second Release: %v; want ErrNotHeld", err)
	}
	if err := waitAttempt(t, waiter, "k", w); err != nil {
		t.Fatalf("the head's attempt: %v", err)
	}
	if err := waiter.Release(ctx, "k", w); err != nil {
		t.Fatal(err)
	}
}

// TestListWokenGrantChecksTheHead: a woken waiter with little of its hold
// left asks the server before it takes the key, and the server's check is
// that its member heads the list: after an operator's DEL of the list
// (which leaves the leases), it is refused, and the key is free for
// others.
func TestListWokenGrantChecksTheHead(t *testing.T) {
	c := listCluster(t)
	ctx := t.Context()
	holder, waiter := c.locker(), c.locker()
	h, w := driver.NewOwner(), driver.NewOwner()
	if _, err := acquire(t, holder, "k", h); err != nil {
		t.Fatal(err)
	}
	wake := watchQuiet(t, waiter, 1, "k", w)
	mustWaitLocked(t, waiter, "k", w)
	queued := time.Now()
	if err := holder.Release(ctx, "k", h); err != nil {
		t.Fatal(err)
	}
	woken(t, wake, "the release")
	if _, err := c.do(0, "DEL", c.lockKey("k")); err != nil {
		t.Fatal(err)
	}
	// Three quarters of the waiter's hold (QueueHold from its queueing)
	// gone: less than a third left.
	time.Sleep(time.Until(queued.Add(driver.QueueHold * 3 / 4)))
	if err := waitAttempt(t, waiter, "k", w); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("the woken waiter, its list deleted: %v; want ErrLocked", err)
	}
	if _, err := acquire(t, c.locker(), "k", driver.NewOwner()); err != nil {
		t.Fatalf("TryLock of the deleted list's key: %v", err)
	}
}

// TestListLateGrantGivenBack: a grant whose reply comes after its validity
// ran out (the server paused) is given back, not returned as held.
func TestListLateGrantGivenBack(t *testing.T) {
	c := listCluster(t)
	conn, err := redlock.NewConnector(c.dsn(), redlock.WithNodeTimeout(5*time.Second))
	l := connect(t, conn, err)
	if _, err := c.do(0, "CLIENT", "PAUSE", 300, "WRITE"); err != nil {
		t.Fatal(err)
	}
	_, err = l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: 100 * time.Millisecond})
	if err == nil || errors.Is(err, driver.ErrLocked) {
		t.Fatalf("a grant that came after its validity: %v; want an error", err)
	}
	if n, _ := redis.Int(c.do(0, "LLEN", c.lockKey("k"))); n != 0 {
		t.Fatalf("the late grant's member is still in the list (%d members)", n)
	}
}

// TestGrantAfterCloseRefused: an attempt under way when its Locker closes
// is refused (ErrClosed), though the server granted it, and Close, which
// waits for it, gives the key back: nothing is left on the server. On one
// server's list and on the sorted-set layout (a plain SET).
func TestGrantAfterCloseRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []redlock.Option
		cmd  string // the attempt's command, as CLIENT LIST shows it
	}{
		{"list", nil, "evalsha"},
		{"sorted sets", []redlock.Option{redlock.WithoutListQueue()}, "set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := listCluster(t)
			conn, err := redlock.NewConnector(c.dsn(), append(tc.opts, redlock.WithNodeTimeout(5*time.Second))...)
			if err != nil {
				t.Fatal(err)
			}
			l, err := conn.Connect(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			// A connection at hand and the script loaded: the attempt is
			// sent at once, and the server runs it once unpaused.
			if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "warm", Owner: driver.NewOwner(), TTL: time.Second}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.do(0, "CLIENT", "PAUSE", 300, "WRITE"); err != nil {
				t.Fatal(err)
			}
			got := make(chan error, 1)
			go func() {
				_, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: 10 * time.Second})
				got <- err
			}()
			waitPaused(t, c, tc.cmd) // the attempt waits in the paused server
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if err := <-got; !errors.Is(err, driver.ErrClosed) {
				t.Fatalf("an attempt granted as its Locker closed: %v; want ErrClosed", err)
			}
			if keys, _ := redis.Strings(c.do(0, "KEYS", c.lockKey("k")+"*")); len(keys) != 0 {
				t.Fatalf("after Close, keys left on the server: %q; want none (the grant given back)", keys)
			}
		})
	}
}

// TestListResentWaiterWritesKeepTheLease: a copy of a waiter's lease
// writes that a client sent again after a timeout (go-redis's MaxRetries)
// and that runs after the grant's renewal (TTL 30 s) leaves the lease as
// long: the queueing's SET, replayed as the driver wrote it, has NX, and
// the refresh script only extends.
func TestListResentWaiterWritesKeepTheLease(t *testing.T) {
	c := listCluster(t)
	var written socketRecord
	conn, err := redlock.NewConnector(c.dsn(), redlock.WithPipeAlways(), redlock.WithConnWrapper(func(nc net.Conn) net.Conn {
		return recordingConn{nc, &written}
	}))
	l := connect(t, conn, err)
	owner := driver.NewOwner()
	if err := waitAttempt(t, l, "k", owner); err != nil {
		t.Fatal(err)
	}
	batch := []driver.Renewal{{Key: "k", Owner: owner, TTL: 30 * time.Second}}
	l.Renew(t.Context(), batch)
	if batch[0].Err != nil {
		t.Fatal(batch[0].Err)
	}
	member := c.members(t, "k")[0]
	lease := c.lockKey("k") + ":l:" + member
	set := written.command(t, "SET", lease)
	rec, _ := redis.String(c.do(0, "GET", lease))
	if _, err := c.do(0, set[0], toAny(set[1:])...); err != nil {
		t.Fatal(err)
	}
	if _, err := c.do(0, "EVAL", redlock.RefreshScript(), 2, c.lockKey("k"), lease, member, 3000); err != nil {
		t.Fatal(err)
	}
	if pttl, err := redis.Int(c.do(0, "PTTL", lease)); err != nil || pttl < 20000 {
		t.Fatalf("the lease's PTTL after late copies of the waiter's writes (%q): %d ms (%v); want the renewal's 30 s", set, pttl, err)
	}
	if after, _ := redis.String(c.do(0, "GET", lease)); after != rec {
		t.Fatalf("a late copy of the queueing's SET replaced the holder record %q with %q", rec, after)
	}
	if err := l.Release(t.Context(), "k", owner); err != nil {
		t.Fatal(err)
	}
}

// socketRecord keeps what a client wrote on its pipelined connections.
type socketRecord struct {
	mu  sync.Mutex
	buf []byte
}

type recordingConn struct {
	net.Conn
	r *socketRecord
}

func (c recordingConn) Write(b []byte) (int, error) {
	c.r.mu.Lock()
	c.r.buf = append(c.r.buf, b...)
	c.r.mu.Unlock()
	return c.Conn.Write(b)
}

// command returns the first command written whose name is name and whose
// first argument is key, parsed from its RESP array.
func (r *socketRecord) command(t *testing.T, name, key string) []string {
	t.Helper()
	r.mu.Lock()
	b := slices.Clone(r.buf)
	r.mu.Unlock()
	line := func(p int) (string, int) { // a line from p, and where the next begins
		e := bytes.Index(b[p:], []byte("\r\n"))
		if e < 0 {
			t.Fatalf("a RESP line cut short in %q", b)
		}
		return string(b[p : p+e]), p + e + 2
	}
	for p := 0; p < len(b); {
		head, next := line(p)
		n, err := strconv.Atoi(strings.TrimPrefix(head, "*"))
		if err != nil {
			t.Fatalf("not a RESP array at %d: %q", p, head)
		}
		p = next
		args := make([]string, n)
		for i := range args {
			size, next := line(p)
			m, _ := strconv.Atoi(strings.TrimPrefix(size, "$"))
			args[i], p = string(b[next:next+m]), next+m+2
		}
		if len(args) > 1 && strings.EqualFold(args[0], name) && args[1] == key {
			return args
		}
	}
	t.Fatalf("no %s %s among the commands written", name, key)
	return nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// waitPaused waits until a client of server 0 is held by CLIENT PAUSE in
// cmd (CLIENT LIST shows it blocked, flags=b, in cmd).
func waitPaused(t *testing.T, c *cluster, cmd string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		clients, err := redis.String(c.do(0, "CLIENT", "LIST"))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(clients, "\n") {
			if strings.Contains(line, " flags=b ") && strings.Contains(line, " cmd="+cmd+" ") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no client in %s 5 s on; CLIENT LIST:\n%s", cmd, clients)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
