package mysql_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mysql"
)

// connectLocker opens a driver-level Locker (no package mutex) in a
// namespace of the test's own.
func connectLocker(t *testing.T, dsn, ns string, opts ...mysql.Option) driver.Locker {
	t.Helper()
	c, err := mysql.NewConnector(dsn, append([]mysql.Option{mysql.WithNamespace(ns)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// A heartbeat (Renew of {keep, tmp}) racing the release of tmp on the same
// session must not end the session: keep stays held. The check once picked
// the key to ask IS_USED_LOCK about before it had the session's slot, so a
// release in between made the check see its own key free and give the
// session up, losing keep.
func TestRenewRacingReleaseKeepsSession(t *testing.T) {
	dsn, admin := testDSN(t)
	ns := uniqueNamespace(t)
	l := connectLocker(t, dsn, ns)
	ctx := t.Context()
	keep := driver.Owner{1}
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "keep", Owner: keep}); err != nil {
		t.Fatal(err)
	}
	conn := holderOf(t, admin, mysql.LockName(ns, "keep"))
	for i := range 200 {
		tmp := driver.Owner{2, byte(i), byte(i >> 8)}
		if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "tmp", Owner: tmp}); err != nil {
			t.Fatalf("round %d: Acquire(tmp): %v", i, err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			l.Renew(ctx, []driver.Renewal{{Key: "keep", Owner: keep}, {Key: "tmp", Owner: tmp}})
		})
		wg.Go(func() {
			if err := l.Release(ctx, "tmp", tmp); err != nil {
				t.Errorf("round %d: Release(tmp): %v", i, err)
			}
		})
		wg.Wait()
		b := []driver.Renewal{{Key: "keep", Owner: keep}}
		l.Renew(ctx, b)
		if b[0].Err != nil {
			t.Fatalf("round %d: keep after a heartbeat raced the release of tmp: %v", i, b[0].Err)
		}
	}
	if got := holderOf(t, admin, mysql.LockName(ns, "keep")); got != conn {
		t.Fatalf("keep held by connection %d, was %d", got, conn)
	}
	if err := l.Release(ctx, "keep", keep); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// A charset list in the URL form reaches go-sql-driver as written: it
// tries each in turn. Its comma was once escaped on the way (%2C), and the
// server was asked for a charset named "nosuch%2Cutf8mb4".
func TestURLCharsetList(t *testing.T) {
	dsn, _ := testDSN(t)
	conn, err := mysql.NewConnector(dsn + "?charset=nosuch,utf8mb4")
	if err != nil {
		t.Fatal(err)
	}
	l, err := conn.Connect(t.Context())
	if err != nil {
		t.Fatalf("Connect with charset=nosuch,utf8mb4: %v", err)
	}
	l.Close()
}
