package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// clientHeartbeat is how often the tests' clients verify their leases
// (mutex.WithHeartbeat): a dead session is found within about two.
const clientHeartbeat = 100 * time.Millisecond

func openClient(t *testing.T, dsn, ns string, opts ...postgres.Option) *mutex.Client {
	t.Helper()
	conn, err := postgres.NewConnector(dsn, append([]postgres.Option{postgres.WithNamespace(ns)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	c := mutex.NewClient(conn, mutex.WithHeartbeat(clientHeartbeat))
	t.Cleanup(func() { c.Close() })
	// Connect now (a failure shows again at the first call): package mutex
	// counts a session lease's first verification from the start of its
	// attempt, so a slow first connect (TLS, scram, -race) inside a TryLock
	// could leave it less than a heartbeat.
	c.Ping(t.Context())
	return c
}

func openDB(t *testing.T) (string, *sql.DB) {
	t.Helper()
	dsn := testserver.PostgresDSN(t)
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return dsn, db
}

// KeyID is stable (changing it would let old and new clients hold one key
// at once), and the SQL the package documents computes the same id.
func TestKeyIDStable(t *testing.T) {
	_, db := openDB(t)
	for _, c := range []struct {
		ns, key string
		want    int64
	}{
		{"", "nightly-report", 5801903214782737050}, // from Python's hashlib
		{"billing", "ключ-🔒", -8365314965533441986},
	} {
		if got := postgres.KeyID(c.ns, c.key); got != c.want {
			t.Errorf("KeyID(%q, %q) = %d; want %d", c.ns, c.key, got, c.want)
		}
		var inSQL int64
		if err := db.QueryRow(postgres.KeyIDSQL, c.ns, c.key).Scan(&inSQL); err != nil || inSQL != c.want {
			t.Errorf("KeyIDSQL(%q, %q) = %d, %v; want %d", c.ns, c.key, inSQL, err, c.want)
		}
	}
	if postgres.KeyID("a", "bc") == postgres.KeyID("ab", "c") {
		t.Error("namespace and key are not kept apart")
	}
	if c, o := postgres.LockTag(-1); c != 0xffffffff || o != 0xffffffff {
		t.Errorf("LockTag(-1) = %x, %x", c, o)
	}
	if c, o := postgres.LockTag(3333<<32 | 4444); c != 3333 || o != 4444 {
		t.Errorf("LockTag = %d, %d; want 3333, 4444", c, o)
	}
}

// SQL holding pg_advisory_lock(KeyID) excludes a Mutex, and a Mutex
// excludes SQL; pg_locks shows the lock where KeyID's doc says.
func TestSQLInterop(t *testing.T) {
	dsn, db := openDB(t)
	ns := t.Name()
	c := openClient(t, dsn, ns)
	id := postgres.KeyID(ns, "shared")
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// SQL first.
	var ok bool
	if err := conn.QueryRowContext(t.Context(), `SELECT pg_try_advisory_lock($1)`, id).Scan(&ok); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, err := c.NewMutex("shared").TryLock(t.Context()); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock while SQL holds the key: %v; want ErrLocked", err)
	}
	if err := conn.QueryRowContext(t.Context(), `SELECT pg_advisory_unlock($1)`, id).Scan(&ok); err != nil || !ok {
		t.Fatal(ok, err)
	}

	// The Mutex first.
	l, err := c.NewMutex("shared").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRowContext(t.Context(), `SELECT pg_try_advisory_lock($1)`, id).Scan(&ok); err != nil || ok {
		t.Fatalf("pg_try_advisory_lock while a Mutex holds the key: %v, %v; want false", ok, err)
	}
	classid, objid := postgres.LockTag(id)
	var n int
	db.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND classid = $1 AND objid = $2`,
		int64(classid), int64(objid)).Scan(&n)
	if n != 1 {
		t.Fatalf("pg_locks shows %d rows at classid %d objid %d; want 1", n, classid, objid)
	}
	l.Unlock(t.Context())
	if err := conn.QueryRowContext(t.Context(), `SELECT pg_try_advisory_lock($1)`, id).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_try_advisory_lock after Unlock: %v, %v; want true", ok, err)
	}
	conn.QueryRowContext(t.Context(), `SELECT pg_advisory_unlock($1)`, id).Scan(&ok)
}

// The transaction-scoped helpers exclude Mutex holders and end with the
// transaction; shared locks admit each other.
func TestTxHelpers(t *testing.T) {
	dsn, db := openDB(t)
	ns := t.Name()
	c := openClient(t, dsn, ns)
	ctx := t.Context()

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := postgres.LockTx(ctx, tx, ns, "job"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewMutex("job").TryLock(ctx); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock while a transaction holds the key: %v; want ErrLocked", err)
	}
	got := make(chan error, 1)
	go func() { // waits, then is woken by the fallback poll: no NOTIFY at commit
		l, err := c.NewMutex("job").Lock(ctx)
		if err == nil {
			l.Unlock(ctx)
		}
		got <- err
	}()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Lock after the transaction committed: %v", err)
	}

	held, err := c.NewMutex("job").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	xtx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := postgres.TryLockTx(ctx, xtx, ns, "job"); err != nil || ok {
		t.Fatalf("TryLockTx while a Mutex holds the key: %v, %v; want false", ok, err)
	}
	if ok, err := postgres.TryLockTxShared(ctx, xtx, ns, "job"); err != nil || ok {
		t.Fatalf("TryLockTxShared while a Mutex holds the key: %v, %v; want false", ok, err)
	}
	xtx.Rollback()
	held.Unlock(ctx)

	// Readers share; a writer waits for them all.
	var txs []*sql.Tx
	for range 2 {
		rtx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		txs = append(txs, rtx)
		if ok, err := postgres.TryLockTxShared(ctx, rtx, ns, "job"); err != nil || !ok {
			t.Fatalf("TryLockTxShared beside another reader: %v, %v; want true", ok, err)
		}
	}
	if _, err := c.NewMutex("job").TryLock(ctx); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock while readers hold the key: %v; want ErrLocked", err)
	}
	for _, rtx := range txs {
		rtx.Rollback()
	}
	l, err := c.NewMutex("job").TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock after the readers ended: %v", err)
	}
	l.Unlock(ctx)
}

// Fencing tokens keep increasing across clients and across a client's
// restart (a new connector: nothing in memory carries over). Fencing is
// the Mutex's choice (mutex.WithFencing): a Mutex without it gets no
// token, and the next fenced grant still gets a greater one.
func TestFencingAcrossRestarts(t *testing.T) {
	dsn, _ := openDB(t)
	ns := t.Name() + time.Now().String()
	var last uint64
	for i := range 4 {
		conn, err := postgres.NewConnector(dsn, postgres.WithNamespace(ns))
		if err != nil {
			t.Fatal(err)
		}
		c := mutex.NewClient(conn)
		fenced := i != 2
		var opts []mutex.MutexOption
		if fenced {
			opts = append(opts, mutex.WithFencing())
		}
		l, err := c.NewMutex("k", opts...).TryLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case !fenced && l.Token() != 0:
			t.Fatalf("token %d without WithFencing; want 0", l.Token())
		case fenced && l.Token() <= last:
			t.Fatalf("token %d after %d", l.Token(), last)
		case fenced:
			last = l.Token()
		}
		l.Unlock(t.Context())
		c.Close()
	}
}

// One fencing switch (issue 13, item 4): mutex.WithFencing on a client
// with no option of its own gets tokens, and the fencing table is made on
// the first fenced grant, not before: a client that never fences never
// writes to the database. Run in a schema of its own (search_path in the
// DSN), where the table is made.
func TestFencingTableOnFirstUse(t *testing.T) {
	dsn, db := openDB(t)
	schema := fmt.Sprintf("mk_fence_%d", time.Now().UnixNano())
	if _, err := db.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`) })
	u, err := url.Parse(dsn)
	if err != nil {
		t.Skip("needs a URL DSN")
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	c := openClient(t, u.String(), t.Name())
	table := func() bool {
		var exists bool
		if err := db.QueryRow(`SELECT to_regclass($1) IS NOT NULL`, schema+"."+postgres.FencingTable).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		return exists
	}

	l, err := c.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if l.Token() != 0 || table() {
		t.Fatalf("an unfenced grant: token %d, fencing table made: %v; want 0, false", l.Token(), table())
	}
	l.Unlock(t.Context())

	for want := uint64(1); want <= 2; want++ {
		l, err = c.NewMutex("k", mutex.WithFencing()).TryLock(t.Context())
		if err != nil {
			t.Fatalf("fenced TryLock: %v", err)
		}
		if l.Token() != want || !table() {
			t.Fatalf("fenced grant: token %d, fencing table made: %v; want %d, true", l.Token(), table(), want)
		}
		h, held, err := c.Inspect(t.Context(), "k")
		if err != nil || !held || h.Token != want {
			t.Fatalf("Inspect: %+v, %v, %v; want token %d", h, held, err, want)
		}
		l.Unlock(t.Context())
	}
}

// A second Close of a Locker returns nil; calls after Close return
// ErrClosed.
func TestLockerCloseTwice(t *testing.T) {
	dsn, _ := openDB(t)
	conn, err := postgres.NewConnector(dsn, postgres.WithNamespace(t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	l, err := conn.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	owner := driver.NewOwner()
	if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v; want nil", err)
	}
	if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: owner}); !errors.Is(err, driver.ErrClosed) {
		t.Fatalf("Acquire after Close: %v; want ErrClosed", err)
	}
	if err := l.Release(t.Context(), "k", owner); !errors.Is(err, driver.ErrClosed) {
		t.Fatalf("Release after Close: %v; want ErrClosed", err)
	}
}

// Watch wakes a waiter of another client, queued behind the holder, when
// the key is released, and the key is kept for it: a TryLock of a third
// client is refused until the waiter takes it.
func TestWatchWakesOnRelease(t *testing.T) {
	dsn, _ := openDB(t)
	ns := t.Name()
	connect := func() driver.Locker {
		conn, _ := postgres.NewConnector(dsn, postgres.WithNamespace(ns))
		l, err := conn.Connect(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	a, b, c := connect(), connect(), connect()
	owner := driver.NewOwner()
	if _, err := a.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: owner}); err != nil {
		t.Fatal(err)
	}
	waiter := driver.NewOwner()
	wait := driver.AcquireRequest{Key: "k", Owner: waiter, Wait: true}
	if _, err := b.Acquire(t.Context(), wait); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("waiting attempt on a held key: %v; want ErrLocked", err)
	}
	wake := make(chan struct{}, 1)
	stop, err := b.Watch("k", waiter, wake)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if _, err := b.Acquire(t.Context(), wait); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("second waiting attempt: %v; want ErrLocked", err)
	}
	if err := a.Release(t.Context(), "k", owner); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()}); !errors.Is(err, driver.ErrLocked) {
		t.Fatalf("TryLock of a free key kept for a waiter: %v; want ErrLocked", err)
	}
	select {
	case <-wake:
	case <-time.After(30 * time.Second):
		t.Fatal("no wake-up after the release")
	}
	if _, err := b.Acquire(t.Context(), wait); err != nil {
		t.Fatalf("Acquire after the wake-up: %v", err)
	}
}

// DSNs: both forms, this driver's parameters, and errors that name the
// problem and never the password. mutex.Open takes URLs; keyword strings
// go through NewConnector.
func TestDSNErrors(t *testing.T) {
	const pw = "s3cret-Pa55"
	for _, c := range []struct{ dsn, want string }{
		{"", "empty"},
		{"postgres://u:" + pw + "@host:5432/db?mutexkit_bogus=1", "mutexkit_bogus"},
		{"postgres://u:" + pw + "@host:5432", "no database"},
		{"host=h user=u password=" + pw, "no database"},
		{"host=h password='" + pw, "cannot read it"},
		{"host=h dbname=d " + pw + "x", "cannot read it"},
		{"host=h dbname=d port=" + pw, `value of "port"`},
		{"host=h dbname= password=" + pw, "no value before the next key"},
		{"postgres://u:" + pw + "@host:5432/db?mutexkit_statement_timeout=never", "mutexkit_statement_timeout"},
		{"postgres://u:" + pw + "@host:5432/db?mutexkit_heartbeat=1s", "unknown parameter"},
		{"postgres://u:" + pw + "@ho st:%zz/db", "malformed"},
		{"host=h dbname=d password=" + pw + " mutexkit_fencing=on", "unknown parameter"},
		{"host=h dbname=d password=" + pw + " mutexkit_max_keys=lots", "mutexkit_max_keys"},
	} {
		_, err := postgres.NewConnector(c.dsn)
		if !errors.Is(err, mutex.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewConnector(%q) = %v; want ErrInvalid mentioning %q", c.dsn, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("NewConnector error quotes the password: %v", err)
		}
	}
	if _, err := mutex.Open("postgres://u:" + pw + "@host:5432/db?mutexkit_bogus=1"); !errors.Is(err, mutex.ErrInvalid) ||
		!strings.Contains(err.Error(), "mutexkit_bogus") || strings.Contains(err.Error(), pw) {
		t.Errorf("Open: %v; want the driver's ErrInvalid, without the password", err)
	}
	for _, dsn := range []string{
		"postgres://u:p@localhost/db?sslmode=disable&mutexkit_namespace=billing" +
			"&mutexkit_keepalive_idle=10&mutexkit_keepalive_interval=2&mutexkit_keepalive_count=5&mutexkit_max_keys=100&mutexkit_statement_timeout=3s",
		"host=localhost dbname=db sslmode=disable mutexkit_namespace='a b' mutexkit_statement_timeout=2.5",
	} {
		if _, err := postgres.NewConnector(dsn); err != nil {
			t.Errorf("NewConnector(%q): %v", dsn, err)
		}
	}
	if _, err := mutex.Open("postgres://u:p@localhost/db?sslmode=disable&mutexkit_namespace=billing"); err != nil {
		t.Errorf("Open: %v", err)
	}
}

// Connection failures are clear and never carry the password. A server
// that cannot be reached is an outage (driver.ErrUnavailable, which Lock
// waits out); a server that refuses this client's role or database is
// not (driver.ErrDenied, which nothing retries), and the two never both
// match.
func TestConnectErrorsRedacted(t *testing.T) {
	dsn, _ := openDB(t)
	const pw = "hunter2-Secret"
	for _, c := range []struct {
		dsn, want string
		kind      error
	}{
		{"postgres://postgres:" + pw + "@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5", "refused", driver.ErrUnavailable},
		{"postgres://nosuchrole_mutexkit:" + pw + "@" + hostOf(t, dsn) + "/postgres?sslmode=disable", "nosuchrole_mutexkit", driver.ErrDenied},
		{"postgres://postgres:" + pw + "@" + hostOf(t, dsn) + "/nosuchdb_mutexkit?sslmode=disable", "nosuchdb_mutexkit", driver.ErrDenied},
	} {
		c2, err := mutex.Open(c.dsn)
		if err != nil {
			t.Fatal(err)
		}
		err = c2.Ping(t.Context())
		c2.Close()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Ping: %v; want an error mentioning %q", err, c.want)
		}
		checkKind(t, "Ping", err, c.kind)
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("Ping error quotes the password: %v", err)
		}
		t.Logf("%v", err)

		// The driver's own Connect (the first lock session) says the same.
		conn, err := postgres.NewConnector(c.dsn)
		if err != nil {
			t.Fatal(err)
		}
		l, err := conn.Connect(t.Context())
		if err == nil {
			l.Close()
			t.Fatalf("Connect succeeded")
		}
		checkKind(t, "Connect", err, c.kind)
	}
}

// checkKind fails t unless err matches kind, and only one of
// driver.ErrUnavailable and driver.ErrDenied.
func checkKind(t *testing.T, what string, err, kind error) {
	t.Helper()
	other := driver.ErrDenied
	if kind == driver.ErrDenied {
		other = driver.ErrUnavailable
	}
	if !errors.Is(err, kind) || errors.Is(err, other) {
		t.Errorf("%s: %v; want an error matching %q and not %q", what, err, kind, other)
	}
}

// An "@" in a query value does not end the user info (issue 12, item 3):
// with "application_name=a@127.0.0.1:<decoy>" the client dials the host
// of the authority and locks there, and the decoy, which would have
// received the password, is never dialed.
func TestDSNAtInQueryValue(t *testing.T) {
	dsn, _ := openDB(t)
	decoy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer decoy.Close()
	dialed := make(chan struct{}, 1)
	go func() {
		for {
			c, err := decoy.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case dialed <- struct{}{}:
			default:
			}
		}
	}()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Skip("needs a URL DSN")
	}
	// The shared server trusts its clients: the password is ignored there.
	u.User = url.UserPassword(u.User.Username(), "s3cret-Pw")
	at := u.String() + "&application_name=a@" + decoy.Addr().String()
	if !strings.Contains(at, "?") {
		at = strings.Replace(at, "&", "?", 1)
	}
	c := openClient(t, at, t.Name())
	l, err := c.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatalf("TryLock through %q: %v", strings.ReplaceAll(at, "s3cret-Pw", "xxxxx"), err)
	}
	l.Unlock(t.Context())
	select {
	case <-dialed:
		t.Fatalf("the client dialed the address in application_name, %s", decoy.Addr())
	default:
	}
}

func hostOf(t *testing.T, dsn string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(dsn, "postgres://")
	if !ok {
		t.Skip("needs a URL DSN")
	}
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	host, _, _ := strings.Cut(rest, "/")
	return host
}

// Inspect names the holding process and the token of a fenced grant, and
// Ping is clean.
func TestInspectAndPing(t *testing.T) {
	dsn, _ := openDB(t)
	ns := t.Name()
	a := openClient(t, dsn, ns)
	b := openClient(t, dsn, ns)
	if err := a.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	l, err := a.NewMutex("k", mutex.WithFencing()).Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(context.Background())
	h, held, err := b.Inspect(t.Context(), "k")
	if err != nil || !held || h.PID == 0 || h.Token != l.Token() {
		t.Fatalf("Inspect: %+v, %v, %v; want held, a pid and token %d", h, held, err, l.Token())
	}
}

// A keyword DSN with this driver's parameters (quoted, with spaces)
// connects, and the parameters take effect.
func TestKeywordDSNConnects(t *testing.T) {
	dsn, db := openDB(t)
	host, port, ok := strings.Cut(hostOf(t, dsn), ":")
	if !ok {
		port = "5432"
	}
	kw := "host=" + host + " port=" + port + " user=postgres dbname=postgres sslmode=disable mutexkit_namespace='a b\\'c' mutexkit_statement_timeout=2s"
	conn, err := postgres.NewConnector(kw)
	if err != nil {
		t.Fatal(err)
	}
	c := mutex.NewClient(conn)
	defer c.Close()
	l, err := c.NewMutex("k").TryLock(t.Context())
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	defer l.Unlock(context.Background())
	classid, objid := postgres.LockTag(postgres.KeyID("a b'c", "k"))
	var n int
	db.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND classid = $1 AND objid = $2`, int64(classid), int64(objid)).Scan(&n)
	if n != 1 {
		t.Fatalf("no lock in namespace \"a b'c\": the DSN's namespace was not applied")
	}
}
