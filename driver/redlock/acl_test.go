package redlock_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

// TestDocumentedACL: an ACL user with the commands docs/REDIS.md lists (read
// from the page), the fencing and Ping extras, on the prefix's keys and
// channels alone, can do everything a lock does: take and give back a key,
// fenced or not, wait in the queue behind a dead waiter (passed over) and
// be served, renew, inspect, ping; and its wake-up subscriptions are up
// (a refused SUBSCRIBE would leave the waiter polling, which serves it
// too). On one node and on three.
func TestDocumentedACL(t *testing.T) {
	rules := documentedACL(t)
	const pass, userPass = "adm1n-Pw", "l0cker-Pw"
	servers := startRedisArgs(t, 3, "--requirepass", pass)
	c := newCluster(t, servers)
	for i := range servers {
		args := []any{"locker", "on", ">" + userPass, "resetkeys", "~" + c.prefix + ":*",
			"resetchannels", "&" + c.prefix + ":*", "-@all"}
		for _, r := range append(rules, "+incr", "+config|get") {
			args = append(args, r)
		}
		if _, err := c.doAuth(i, pass, "ACL", append([]any{"SETUSER"}, args...)...); err != nil {
			t.Fatalf("ACL SETUSER %v: %v", args, err)
		}
	}
	for _, n := range []int{1, 3} {
		t.Run(map[int]string{1: "1node", 3: "3nodes"}[n], func(t *testing.T) {
			dsn := "redis://locker:" + userPass + "@" + strings.Join(c.addrs()[:n], ",") + "?prefix=" + c.prefix
			open := func() *mutex.Client {
				conn, err := redlock.NewConnector(dsn)
				if err != nil {
					t.Fatal(err)
				}
				cl := mutex.NewClient(conn)
				t.Cleanup(func() { cl.Close() })
				return cl
			}
			a, b := open(), open()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			if err := a.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			lease, err := a.NewMutex("k", mutex.WithTTL(time.Second)).TryLock(ctx)
			if err != nil {
				t.Fatalf("TryLock: %v", err)
			}
			if _, _, err := a.Inspect(ctx, "k"); err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			// A dead waiter first in the queue (its place's deadline passed,
			// or, in one node's list, its lease gone), which the release or
			// the waiter behind it passes over.
			for i := range n {
				lock := redlock.LockKey(c.prefix, "k")
				if n == 1 {
					if _, err := c.doAuth(i, pass, "RPUSH", lock, strings.Repeat("de", 24)+"1"); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if _, err := c.doAuth(i, pass, "ZADD", lock+":q", 0, "dead"); err != nil {
					t.Fatal(err)
				}
				if _, err := c.doAuth(i, pass, "ZADD", lock+":qd", 1, "dead"); err != nil {
					t.Fatal(err)
				}
			}
			// Queued behind the holder, woken by its release.
			got := make(chan error, 1)
			go func() {
				l, err := b.NewMutex("k").Lock(ctx)
				if err == nil {
					err = l.Unlock(ctx)
				}
				got <- err
			}()
			time.Sleep(1500 * time.Millisecond) // renewals of the 1 s lease meanwhile
			if err := lease.Err(); err != nil {
				t.Fatalf("the holder's renewals: %v", err)
			}
			for i := range n {
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
					clients, err := redis.String(c.doAuth(i, pass, "CLIENT", "LIST"))
					if err != nil {
						t.Fatal(err)
					}
					if userSubscribed(clients, "locker") {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("node %d: no subscription of the ACL user's after 10 s; CLIENT LIST:\n%s", i, clients)
					}
				}
			}
			if err := lease.Unlock(ctx); err != nil {
				t.Fatalf("Unlock: %v", err)
			}
			if err := <-got; err != nil {
				t.Fatalf("the waiter's Lock: %v", err)
			}
			if n == 1 {
				fenced, err := a.NewMutex("f", mutex.WithFencing()).Lock(ctx)
				if err != nil {
					t.Fatalf("fenced Lock: %v", err)
				}
				if err := fenced.Unlock(ctx); err != nil {
					t.Fatalf("fenced Unlock: %v", err)
				}
			}
		})
	}
}

// userSubscribed reports whether CLIENT LIST shows a connection of user
// subscribed to a channel.
func userSubscribed(clients, user string) bool {
	for line := range strings.SplitSeq(clients, "\n") {
		f := strings.Fields(line)
		if slices.Contains(f, "user="+user) && !slices.Contains(f, "sub=0") && slices.ContainsFunc(f, func(s string) bool {
			return strings.HasPrefix(s, "sub=")
		}) {
			return true
		}
	}
	return false
}

// documentedACL returns the commands docs/REDIS.md says an ACL user needs.
func documentedACL(t *testing.T) []string {
	t.Helper()
	page, err := os.ReadFile("../../docs/REDIS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(page), "An ACL user needs\n")
	if !ok {
		_, rest, ok = strings.Cut(string(page), "An ACL user needs ")
	}
	_, rest, ok2 := strings.Cut(rest, "`")
	list, _, ok3 := strings.Cut(rest, "`")
	if !ok || !ok2 || !ok3 {
		t.Fatal(`docs/REDIS.md: no "An ACL user needs" followed by a list in backquotes`)
	}
	rules := strings.Fields(list)
	if len(rules) < 5 {
		t.Fatalf("docs/REDIS.md lists %q", rules)
	}
	return rules
}
