package redlock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

// TestDenied: a refused password or user, no password, a database index
// out of range, a command the user's ACL forbids: each is
// driver.ErrDenied (a configuration error, which nothing waits out), never
// driver.ErrUnavailable, on one node and on three.
func TestDenied(t *testing.T) {
	const pass, limitedPass = "adm1n-Pw", "l1mited-Pw"
	servers := startRedisArgs(t, 3, "--requirepass", pass)
	c := newCluster(t, servers)
	for i := range servers {
		// All a lock needs but SET, which the acquire sends first; or but
		// GET, which the scripts run.
		for user, rule := range map[string]string{"limited": "-set", "noget": "-get"} {
			if _, err := c.doAuth(i, pass, "ACL", "SETUSER", user, "on", ">"+limitedPass, "~*", "&*", "+@all", rule); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name, userinfo, db string
		says               string // in the error
		pingOK             bool   // the refusal is of a command the lock needs, not of the client
		inspect            bool   // the refusal is of the scripts: Inspect's is checked, not Acquire's
		only               int    // the one node count to run on (0: 1 and 3)
	}{
		{name: "wrong password", userinfo: ":wrong-" + pass + "@", says: "WRONGPASS"},
		{name: "unknown user", userinfo: "nobody:" + pass + "@", says: "WRONGPASS"},
		{name: "no password", says: "NOAUTH"},
		{name: "db out of range", userinfo: ":" + pass + "@", db: "/99", says: "DB index is out of range"},
		// Redlock's first command is SET; one node's TryLock is a script
		// (the list protocol, list.go).
		{name: "acl", userinfo: "limited:" + limitedPass + "@", says: "NOPERM", pingOK: true, only: 3},
		{name: "acl", userinfo: "limited:" + limitedPass + "@", says: "can't run this command", pingOK: true, only: 1},
		{name: "acl script", userinfo: "noget:" + limitedPass + "@", says: "can't run this command", pingOK: true, inspect: true},
	} {
		for _, n := range []int{1, 3} {
			if tc.only != 0 && tc.only != n {
				continue
			}
			addrs := c.addrs()[:n]
			dsn := "redis://" + tc.userinfo + strings.Join(addrs, ",") + tc.db + "?prefix=" + c.prefix
			t.Run(tc.name+"/"+string(rune('0'+n)), func(t *testing.T) {
				conn, err := redlock.NewConnector(dsn)
				l := connect(t, conn, err)
				if tc.inspect {
					// Held, so that Inspect reads a holder record (GET).
					ac, err := redlock.NewConnector("redis://:" + pass + "@" + strings.Join(addrs, ",") + "?prefix=" + c.prefix)
					admin := connect(t, ac, err)
					if _, err := admin.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Minute}); err != nil {
						t.Fatal(err)
					}
					_, _, err = l.Inspect(t.Context(), "k")
					denied(t, "Inspect", err, tc.says, pass, limitedPass)
					return
				}
				_, err = l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner(), TTL: time.Minute})
				denied(t, "Acquire", err, tc.says, pass, limitedPass)
				if err := l.Ping(t.Context()); !tc.pingOK {
					denied(t, "Ping", err, tc.says, pass, limitedPass)
				} else if err != nil {
					t.Errorf("Ping: %v", err)
				}
				// Lock does not wait a refusal out.
				cl := mutex.NewClient(conn)
				defer cl.Close()
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				_, err = cl.NewMutex("k").Lock(ctx)
				if !errors.Is(err, mutex.ErrDenied) || ctx.Err() != nil {
					t.Errorf("Lock: %v (ctx %v); want mutex.ErrDenied at once", err, ctx.Err())
				}
			})
		}
	}
}

// denied checks that err of call is a refusal, says so, and carries no
// password.
func denied(t *testing.T, call string, err error, says string, passwords ...string) {
	t.Helper()
	switch {
	case !errors.Is(err, driver.ErrDenied):
		t.Errorf("%s: %v; want driver.ErrDenied", call, err)
	case errors.Is(err, driver.ErrUnavailable):
		t.Errorf("%s: %v; matches driver.ErrUnavailable too", call, err)
	case !strings.Contains(err.Error(), says):
		t.Errorf("%s: %v; want it to say %q", call, err, says)
	}
	for _, p := range passwords {
		if err != nil && strings.Contains(err.Error(), p) {
			t.Errorf("%s: the error carries a password: %v", call, err)
		}
	}
}
