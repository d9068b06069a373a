package postgres

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// connectLocker returns a Locker of this driver, closed with the test.
func connectLocker(t *testing.T, dsn string) *locker {
	t.Helper()
	conn, err := NewConnector(dsn, WithNamespace(namespace(t)))
	if err != nil {
		t.Fatal(err)
	}
	dl, err := conn.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dl.Close() })
	return dl.(*locker)
}

// sessionOf returns the session key is held on.
func sessionOf(l *locker, key string) *session {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[key].s
}

// renewErrs runs one Renew and returns each element's error.
func renewErrs(t *testing.T, l *locker, batch []driver.Renewal) []error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second) // a busy session is vouched for after 1s
	defer cancel()
	l.Renew(ctx, batch)
	errs := make([]error, len(batch))
	for i, r := range batch {
		errs[i] = r.Err
	}
	return errs
}

// Renew with TTL 0 verifies session grants (issue 13, item 5): a key on a
// live session is held, a stranger's or an unknown key is not, a TTL is
// not extended. A session killed on the server is found, and only its
// keys are lost (ErrNotHeld, and OnLost); a session busy with a statement
// is vouched for by another, which also finds it once it is killed.
func TestRenewVerifiesSessions(t *testing.T) {
	dsn, db := adminDB(t)
	l := connectLocker(t, dsn)
	ctx := t.Context()
	o0, o1 := driver.NewOwner(), driver.NewOwner()
	lost := make(chan error, 2)
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k0", Owner: o0, OnLost: func(err error) { lost <- err }}); err != nil {
		t.Fatal(err)
	}
	// A second session for k1: the first one's slot is taken meanwhile.
	s0 := sessionOf(l, "k0")
	s0.sem <- struct{}{}
	if _, err := l.Acquire(ctx, driver.AcquireRequest{Key: "k1", Owner: o1}); err != nil {
		t.Fatal(err)
	}
	s0.give()
	s1 := sessionOf(l, "k1")
	if s1 == s0 {
		t.Fatal("k1 is on k0's session")
	}
	verify := func() []driver.Renewal {
		return []driver.Renewal{{Key: "k0", Owner: o0}, {Key: "k1", Owner: o1}}
	}

	errs := renewErrs(t, l, append(verify(),
		driver.Renewal{Key: "k0", Owner: driver.NewOwner()},
		driver.Renewal{Key: "nokey", Owner: o0},
		driver.Renewal{Key: "k0", Owner: o0, TTL: time.Second}))
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("Renew of live session grants: %v", errs[:2])
	}
	if !errors.Is(errs[2], driver.ErrNotHeld) || !errors.Is(errs[3], driver.ErrNotHeld) {
		t.Fatalf("Renew of a stranger's and of an unknown key: %v; want ErrNotHeld", errs[2:4])
	}
	if !errors.Is(errs[4], driver.ErrUnimplemented) {
		t.Fatalf("Renew with a TTL: %v; want ErrUnimplemented", errs[4])
	}

	if _, err := db.Exec(`SELECT pg_terminate_backend($1)`, s0.pid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the backend to exit", func() bool { return holderPID(t, db, l.cfg.namespace, "k0") == 0 })
	errs = renewErrs(t, l, verify())
	if !errors.Is(errs[0], driver.ErrNotHeld) || errs[1] != nil {
		t.Fatalf("Renew after k0's backend was killed: %v; want ErrNotHeld for k0 only", errs)
	}
	select {
	case err := <-lost:
		if !errors.Is(err, driver.ErrNotHeld) {
			t.Fatalf("OnLost: %v; want ErrNotHeld", err)
		}
	default:
		t.Fatal("OnLost not called for k0")
	}

	// k1's session is busy (its slot taken, as by a statement that waits
	// on the server): another session vouches for it.
	s1.sem <- struct{}{}
	defer s1.give()
	if errs := renewErrs(t, l, verify()[1:]); errs[0] != nil {
		t.Fatalf("Renew of a busy session: %v", errs[0])
	}
	if _, err := db.Exec(`SELECT pg_terminate_backend($1)`, s1.pid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the backend to exit", func() bool { return holderPID(t, db, l.cfg.namespace, "k1") == 0 })
	if errs := renewErrs(t, l, verify()[1:]); !errors.Is(errs[0], driver.ErrNotHeld) {
		t.Fatalf("Renew of a busy session whose backend was killed: %v; want ErrNotHeld", errs[0])
	}
}

// A session that died while idle, holding nothing (a server restart, an
// idle killer), fails no call: Acquire, Inspect and Ping run once more on
// a fresh session, as database/sql does with a pooled connection that went
// bad. (The per-session heartbeat that used to give such a session up in
// the background is gone.)
func TestIdleDeadSessionReplaced(t *testing.T) {
	dsn, db := adminDB(t)
	for _, op := range []string{"Acquire", "Inspect", "Ping"} {
		t.Run(op, func(t *testing.T) {
			l := connectLocker(t, dsn)
			l.mu.Lock()
			pid := l.sessions[0].pid
			l.mu.Unlock()
			if _, err := db.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the backend to exit", func() bool {
				var n int
				db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n)
				return n == 0
			})
			var err error
			switch op {
			case "Acquire":
				_, err = l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: driver.NewOwner()})
			case "Inspect":
				_, _, err = l.Inspect(t.Context(), "k")
			case "Ping":
				err = l.Ping(t.Context())
			}
			if err != nil {
				t.Fatalf("%s after the idle session's backend was killed: %v", op, err)
			}
		})
	}
}

// slowConnectProxy forwards connections to target, each once delay has
// passed after it was accepted (a slow connect: TLS, SCRAM, a WAN), and
// returns its address.
func slowConnectProxy(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			go func() {
				time.Sleep(delay)
				up, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					c.Close()
					return
				}
				track(up)
				go func() { io.Copy(up, c); up.Close() }()
				io.Copy(c, up)
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// A session busy with a statement (one that waits on the server) is
// vouched for by another, also when opening that one takes longer than a
// Renew may: it is opened under a deadline of its own and joins the pool,
// so a later Renew vouches at once. Before, each Renew's open was
// cancelled with it and begun again by the next, and the lease was lost
// though its session was alive.
func TestVouchWithSlowConnect(t *testing.T) {
	dsn, _ := adminDB(t)
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		t.Skip("the test server's DSN is not a URL")
	}
	const heartbeat = 100 * time.Millisecond
	u.Host = slowConnectProxy(t, u.Host, 3*heartbeat)
	// An application's pool (FromDB): waiting for its connection honours
	// the context it is asked with (this driver's own dials finish their
	// startup regardless).
	db, err := sql.Open("postgres", u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	dl, err := FromDB(db, WithNamespace(namespace(t))).Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dl.Close() })
	l := dl.(*locker)
	o := driver.NewOwner()
	lost := make(chan error, 1)
	if _, err := l.Acquire(t.Context(), driver.AcquireRequest{Key: "k", Owner: o, OnLost: func(err error) { lost <- err }}); err != nil {
		t.Fatal(err)
	}
	s := sessionOf(l, "k")
	s.sem <- struct{}{} // busy
	defer s.give()

	// Renew as package mutex calls it every heartbeat, given at most two
	// heartbeats and a half.
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for ok := 0; ok < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("Renew of a busy session's lease never succeeded: %v", last)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*heartbeat/2)
		batch := []driver.Renewal{{Key: "k", Owner: o}}
		l.Renew(ctx, batch)
		cancel()
		if last = batch[0].Err; last == nil {
			ok++
		} else if errors.Is(last, driver.ErrNotHeld) {
			t.Fatalf("Renew of a busy, live session's lease: %v", last)
		}
		time.Sleep(heartbeat)
	}
	select {
	case err := <-lost:
		t.Fatalf("OnLost: %v", err)
	default:
	}
}
