package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mysql"
	"github.com/mutexkit/mutexkit/mutex"
)

const clientHeartbeat = 100 * time.Millisecond

func openClient(t *testing.T, dsn, ns string, opts ...mysql.Option) *mutex.Client {
	t.Helper()
	conn, err := mysql.NewConnector(dsn, append([]mysql.Option{mysql.WithNamespace(ns)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	c := mutex.NewClient(conn, mutex.WithHeartbeat(clientHeartbeat))
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c
}

// holderOf is the connection holding a lock name, or 0.
func holderOf(t *testing.T, admin *sql.DB, name string) int64 {
	t.Helper()
	var id sql.NullInt64
	if err := admin.QueryRow(`SELECT IS_USED_LOCK(?)`, name).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id.Int64
}

// LockName is stable (changing it would let old and new clients hold one
// key at once), and LockNameSQL computes the same name.
func TestLockNameStable(t *testing.T) {
	_, admin := testDSN(t)
	sha := func(s string) string { // SHA-256 by the server, so the test does not restate the driver's code
		var h string
		if err := admin.QueryRow(`SELECT LEFT(SHA2(?, 256), 32)`, s).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	for _, c := range []struct{ ns, key, want string }{
		{"", "nightly-report", "mk/nightly-report/" + sha("0:nightly-report")},
		{"billing", "ключ-🔒 x", "mk//" + sha("7:billingключ-🔒 x")},
		{"a", strings.Repeat("k", 40), "mk/" + strings.Repeat("k", 28) + "/" + sha("1:a"+strings.Repeat("k", 40))},
		{"n", "job:42/ä", "mk/job:42/" + sha("1:njob:42/ä")},
	} {
		got := mysql.LockName(c.ns, c.key)
		if got != c.want || len(got) > 64 {
			t.Errorf("LockName(%q, %q) = %q; want %q", c.ns, c.key, got, c.want)
		}
		var inSQL string
		if err := admin.QueryRow(mysql.LockNameSQL, c.ns, c.key).Scan(&inSQL); err != nil || inSQL != got {
			t.Errorf("LockNameSQL(%q, %q) = %q, %v; want %q", c.ns, c.key, inSQL, err, got)
		}
	}
	if mysql.LockName("a", "bc") == mysql.LockName("ab", "c") {
		t.Error("namespace and key are not kept apart")
	}
	if mysql.LockName("", "Key") == mysql.LockName("", "key") {
		t.Error("keys differing in case share a name (MySQL compares lock names without case)")
	}
}

// A lock taken with plain SQL GET_LOCK of LockName excludes a Mutex, and a
// Mutex excludes GET_LOCK.
func TestInteropPlainSQL(t *testing.T) {
	dsn, admin := testDSN(t)
	ns := uniqueNamespace(t)
	c := openClient(t, dsn, ns)
	conn, err := admin.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got int
	if err := conn.QueryRowContext(t.Context(), `SELECT GET_LOCK((`+mysql.LockNameSQL+`), 0)`, ns, "shared").Scan(&got); err != nil || got != 1 {
		t.Fatalf("SQL GET_LOCK: %d, %v", got, err)
	}
	if _, err := c.NewMutex("shared").TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock of a key SQL holds: %v; want ErrLocked", err)
	}
	conn.ExecContext(t.Context(), `DO RELEASE_LOCK((`+mysql.LockNameSQL+`))`, ns, "shared")
	l, err := c.NewMutex("shared").TryLock(t.Context())
	if err != nil {
		t.Fatalf("TryLock after SQL released: %v", err)
	}
	if err := conn.QueryRowContext(t.Context(), `SELECT GET_LOCK((`+mysql.LockNameSQL+`), 0)`, ns, "shared").Scan(&got); err != nil || got != 0 {
		t.Fatalf("SQL GET_LOCK of a key a Mutex holds: %d, %v; want 0", got, err)
	}
	l.Unlock(t.Context())
}

// Errors are classified (ErrDenied for a refusal, ErrUnavailable for an
// unreachable server, ErrInvalid for a bad DSN) and never carry the
// password.
func TestErrorsClassifiedAndRedacted(t *testing.T) {
	dsn, _ := testDSN(t)
	u, _ := url.Parse(dsn)
	const secret = "s3cr3t-p@ss/w0rd"
	withUser := func(user, pass, db string) string {
		v := *u
		v.User = url.UserPassword(user, pass)
		v.Path = "/" + db
		return v.String()
	}
	cases := []struct {
		name, dsn string
		want      error
	}{
		{"wrong password", withUser("root", secret, "test"), driver.ErrDenied},
		{"unknown user", withUser("nobody-"+secret[:4], secret, "test"), driver.ErrDenied},
		{"unreachable", "mysql://root:" + url.QueryEscape(secret) + "@127.0.0.1:1/test", driver.ErrUnavailable},
	}
	for _, c := range cases {
		conn, err := mysql.NewConnector(c.dsn)
		if err != nil {
			t.Fatalf("%s: NewConnector: %v", c.name, err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err = conn.Connect(ctx)
		cancel()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v; want %v", c.name, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), url.QueryEscape(secret))) {
			t.Errorf("%s: the error shows the password: %v", c.name, err)
		}
	}
	for _, bad := range []string{
		"mysql://root:" + secret + "@host:port:x/test", // url.Parse would quote it
		"root:" + secret + "@tcp(127.0.0.1:3306)/test?timeout=soon",
		"root:" + secret + "@tcp(127.0.0.1:3306)/",
		"mysql://root:" + url.QueryEscape(secret) + "@127.0.0.1/test?mutexkit_wait=sometimes",
	} {
		_, err := mysql.NewConnector(bad)
		if !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("NewConnector of a bad DSN (%d bytes): %v; want ErrInvalid", len(bad), err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	// The go-sql-driver form opens too, with this driver's parameters.
	conn, err := mysql.NewConnector("root@tcp(" + hostPort(t, dsn) + ")/test?mutexkit_namespace=x&parseTime=true")
	if err != nil {
		t.Fatal(err)
	}
	l, err := conn.Connect(t.Context())
	if err != nil {
		t.Fatalf("Connect with go-sql-driver's DSN form: %v", err)
	}
	l.Close()
}

// A key's lock is kept while a caller's context ends in the middle of
// other calls on the same session: a Release whose context is already
// cancelled, a Lock cancelled while it waits in the server. go-sql-driver
// closes a connection whose statement's context ends; the driver never
// gives a caller's context to a statement on a lock session.
func TestCancelledContextKeepsSession(t *testing.T) {
	dsn, admin := testDSN(t)
	ns := uniqueNamespace(t)
	a, b := openClient(t, dsn, ns), openClient(t, dsn, ns)
	keep, err := a.NewMutex("keep").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	before := holderOf(t, admin, mysql.LockName(ns, "keep"))
	other, err := a.NewMutex("other").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	other.Unlock(ctx) // returns ctx's error, or nil; the release goes on
	held, err := b.NewMutex("busy").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	if _, err := a.NewMutex("busy").Lock(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of a held key: %v; want DeadlineExceeded", err)
	}
	wcancel()
	time.Sleep(5 * clientHeartbeat)
	if after := holderOf(t, admin, mysql.LockName(ns, "keep")); after != before || after == 0 {
		t.Fatalf("key held by connection %d before, %d after the cancelled calls", before, after)
	}
	if keep.Err() != nil {
		t.Fatalf("lease: %v", keep.Err())
	}
	held.Unlock(t.Context())
	keep.Unlock(t.Context())
}

// wait_timeout: a holder's session outlives a short wait_timeout (the
// heartbeat keeps it busy), and an idle session without keys that the
// server ended is replaced without an error.
func TestIdleTimeout(t *testing.T) {
	dsn, admin := testDSN(t)
	ns := uniqueNamespace(t)
	c := openClient(t, dsn, ns, mysql.WithIdleTimeout(2*time.Second))
	l, err := c.NewMutex("idle").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	if l.Err() != nil || holderOf(t, admin, mysql.LockName(ns, "idle")) == 0 {
		t.Fatalf("lease after twice wait_timeout: %v", l.Err())
	}
	l.Unlock(t.Context())
	time.Sleep(4 * time.Second) // the session, idle now, is ended by the server
	l, err = c.NewMutex("idle-2").TryLock(t.Context())
	if err != nil {
		t.Fatalf("TryLock after the server ended the idle session: %v", err)
	}
	l.Unlock(t.Context())
}

// A read-only server (a replica) is refused.
func TestReadOnlyRefused(t *testing.T) {
	dsn, admin := testDSN(t)
	if _, err := admin.Exec(`SET GLOBAL read_only = 1`); err != nil {
		t.Skipf("cannot make the server read-only: %v", err)
	}
	defer admin.Exec(`SET GLOBAL read_only = 0`)
	conn, err := mysql.NewConnector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Connect(t.Context())
	if !errors.Is(err, mysql.ErrReadOnly) || !errors.Is(err, driver.ErrInvalid) {
		t.Fatalf("Connect to a read-only server: %v; want ErrReadOnly, ErrInvalid", err)
	}
}

// 2,000 keys held by one client, verified every heartbeat, refused to
// another, all freed by Close.
func TestTwoThousandKeys(t *testing.T) {
	dsn, admin := testDSN(t)
	ns := uniqueNamespace(t)
	a, b := openClient(t, dsn, ns), openClient(t, dsn, ns)
	const n = 2000
	leases := make([]*mutex.Lease, n)
	for i := range leases {
		l, err := a.NewMutex(fmt.Sprint("k", i)).TryLock(t.Context())
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		leases[i] = l
	}
	time.Sleep(5 * clientHeartbeat)
	for i := 0; i < n; i += 97 {
		if leases[i].Err() != nil {
			t.Fatalf("lease %d: %v", i, leases[i].Err())
		}
		if _, err := b.NewMutex(fmt.Sprint("k", i)).TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("key %d by another client: %v; want ErrLocked", i, err)
		}
	}
	a.Close()
	if id := holderOf(t, admin, mysql.LockName(ns, "k1999")); id != 0 {
		t.Fatalf("key still held by %d after Close", id)
	}
}

// Fencing tokens strictly increase per key across clients and are durable
// in the table, which a new client continues.
func TestFencingTable(t *testing.T) {
	dsn, admin := testDSN(t)
	ns := uniqueNamespace(t)
	var last uint64
	for i := range 3 {
		c := openClient(t, dsn, ns)
		l, err := c.NewMutex("fenced", mutex.WithFencing()).TryLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if l.Token() <= last {
			t.Fatalf("client %d: token %d after %d", i, l.Token(), last)
		}
		last = l.Token()
		l.Unlock(t.Context())
		c.Close()
	}
	var tok uint64
	if err := admin.QueryRow(`SELECT token FROM `+mysql.FencingTable+` WHERE name = ?`, mysql.LockName(ns, "fenced")).Scan(&tok); err != nil || tok != last {
		t.Fatalf("table says %d, %v; last token %d", tok, err, last)
	}
}
