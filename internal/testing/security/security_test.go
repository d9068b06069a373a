package security

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

const secret = "Pw-7f3a9c2e-s3cr3t"

// leaked reports whether text carries the secret in any form a DSN holds it.
func leaked(text string) bool {
	for _, form := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret)} {
		if strings.Contains(text, form) {
			return true
		}
	}
	return false
}

// observed opens a client of dsn with logging (every record, at Debug)
// and tracing into a recorder, runs ops, and fails t if any error, log
// record, span name, attribute, event or status carries the secret.
func observed(t *testing.T, dsn string, ops func(ctx context.Context, c *mutex.Client) []error) {
	t.Helper()
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	c, err := mutex.Open(dsn, mutex.WithMiddleware(
		middleware.Tracing(middleware.WithTracerProvider(tp)), middleware.Logging(logger, middleware.WithLevel(slog.LevelDebug))))
	if err != nil {
		if leaked(err.Error()) || leaked(fmt.Sprintf("%+v %#v", err, err)) {
			t.Errorf("Open error carries the password: %v", err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := ops(ctx, c)
	errs = append(errs, c.Close())
	for _, err := range errs {
		if err != nil && (leaked(err.Error()) || leaked(fmt.Sprintf("%+v", err))) {
			t.Errorf("error carries the password: %v", err)
		}
	}
	if leaked(logs.String()) {
		t.Errorf("log carries the password:\n%s", logs.String())
	}
	if logs.Len() == 0 {
		t.Error("no log record written: the check saw nothing")
	}
	checkSpans(t, rec.Ended(), "the password", leaked)
}

// checkSpans fails t if any span's name, status, attribute or event
// carries what leaks says, or if there is no span to check.
func checkSpans(t *testing.T, spans []sdktrace.ReadOnlySpan, what string, leaks func(string) bool) {
	t.Helper()
	if len(spans) == 0 {
		t.Error("no span recorded: the check saw nothing")
	}
	for _, s := range spans {
		texts := []string{s.Name(), s.Status().Description}
		for _, a := range s.Attributes() {
			texts = append(texts, a.Value.String())
		}
		for _, e := range s.Events() {
			texts = append(texts, e.Name)
			for _, a := range e.Attributes {
				texts = append(texts, a.Value.String())
			}
		}
		if leaks(strings.Join(texts, "\n")) {
			t.Errorf("span %q carries %s: %q", s.Name(), what, texts)
		}
	}
}

// lockOps pings, locks, renews (by holding past a third of the TTL where
// there is one), inspects and unlocks, collecting errors.
func lockOps(ctx context.Context, c *mutex.Client) []error {
	errs := []error{c.Ping(ctx)}
	m := c.NewMutex("security-key", mutex.WithTTL(time.Second))
	l, err := m.TryLock(ctx)
	errs = append(errs, err)
	if err == nil {
		time.Sleep(400 * time.Millisecond) // one renewal
		errs = append(errs, l.Unlock(ctx), l.Unlock(ctx))
	}
	return errs
}

func TestNoPasswordInErrorsLogsSpans(t *testing.T) {
	// Malformed DSNs of each driver, with a password.
	for _, c := range []struct{ driver, dsn string }{
		{redlock.Name, "redis://:" + secret + "@h:99999"},
		{redlock.Name, "redis://:" + secret + "@h:1,h:2"},
		{redlock.Name, "redis://:" + secret + "%zz@h:1"},
		{redlock.Name, "redis://:" + secret + "@h:1?bogus=1"},
		{postgres.Name, "postgres://u:" + secret + "@ho st:%zz/db"},
		{postgres.Name, "postgres://u:" + secret + "@h:5432"},
		{postgres.Name, "postgres://u@h/db?password=" + secret + "&mutexkit_bogus=1"},
		{postgres.Name, "host=h password=" + secret + " dbname='x"},
		{file.Name, "file://u:" + secret + "@localhost/x"},
	} {
		t.Run("open/"+c.driver, func(t *testing.T) {
			_, err := mutex.Open(c.dsn)
			if err == nil {
				t.Fatalf("Open(%s DSN) succeeded; want an error", c.driver)
			}
			if leaked(err.Error()) {
				t.Errorf("Open error carries the password: %v", err)
			}
		})
	}
	// Another driver's DSN given to a driver's own constructor.
	if _, err := file.NewConnector("redis://:" + secret + "@h:1"); err == nil || leaked(err.Error()) {
		t.Errorf("file.NewConnector(a redis DSN) = %v; want an error without the password", err)
	}
	// Unreachable servers: connection errors through the middleware.
	t.Run("redis-unreachable", func(t *testing.T) {
		observed(t, "redis://:"+secret+"@127.0.0.1:1?connect_timeout=200ms", lockOps)
	})
	t.Run("redlock-unreachable", func(t *testing.T) {
		observed(t, "redis://u:"+secret+"@127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?connect_timeout=200ms", lockOps)
	})
	t.Run("postgres-unreachable", func(t *testing.T) {
		observed(t, "postgres://u:"+secret+"@127.0.0.1:1/db?sslmode=disable&connect_timeout=1", lockOps)
	})
	// A Redis that requires the password: a wrong one, then the right one.
	t.Run("redis-auth", func(t *testing.T) {
		s := testserver.StartRedis(t, 1, testserver.WithRedisArgs("--requirepass", secret))[0]
		observed(t, "redis://:wrong-"+secret+"@"+s.Addr(), lockOps)
		observed(t, "redis://:"+secret+"@"+s.Addr(), lockOps)
	})
	// PostgreSQL with a password in the DSN (ignored by a trusting server,
	// checked by one that asks).
	t.Run("postgres", func(t *testing.T) {
		u, err := url.Parse(testserver.PostgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, has := u.User.Password(); !has {
			u.User = url.UserPassword(u.User.Username(), secret)
		}
		observed(t, u.String(), lockOps)
	})
}

// Owner values are 128 bits from crypto/rand: distinct across a large
// sample, never zero, and spread over every bit.
func TestOwnersUnguessable(t *testing.T) {
	const n = 200_000
	seen := make(map[driver.Owner]struct{}, n)
	var ones [128]int
	for range n {
		o := driver.NewOwner()
		if o.IsZero() {
			t.Fatal("zero owner")
		}
		if _, dup := seen[o]; dup {
			t.Fatalf("owner %s drawn twice in %d", o, n)
		}
		seen[o] = struct{}{}
		for i := range 128 {
			ones[i] += int(o[i/8]>>(i%8)) & 1
		}
	}
	for i, c := range ones { // each bit set about half the time: 6 sigma is ±1342
		if c < n/2-1400 || c > n/2+1400 {
			t.Errorf("bit %d set in %d of %d owners", i, c, n)
		}
	}
}

// nonOwner checks, at the driver level, that an owner that does not hold
// key can neither release nor extend it, from the holder's Locker or
// another one, and that the key stays held.
func nonOwner(t *testing.T, conn driver.Connector, ttl time.Duration, renews bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder, err := conn.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	other, err := conn.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	key := "nonowner-" + driver.NewOwner().String()
	owner := driver.NewOwner()
	if _, err := holder.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: owner, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]driver.Locker{"the holder's Locker": holder, "another Locker": other} {
		intruder := driver.NewOwner()
		if err := l.Release(ctx, key, intruder); !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("Release by a non-owner on %s: %v; want ErrNotHeld", name, err)
		}
		if renews {
			batch := []driver.Renewal{{Key: key, Owner: intruder, TTL: ttl}}
			l.Renew(ctx, batch)
			if !errors.Is(batch[0].Err, driver.ErrNotHeld) {
				t.Errorf("Renew by a non-owner on %s: %v (validity %v); want ErrNotHeld", name, batch[0].Err, batch[0].Validity)
			}
		}
		if _, err := other.Acquire(ctx, driver.AcquireRequest{Key: key, Owner: driver.NewOwner(), TTL: ttl}); !errors.Is(err, driver.ErrLocked) {
			t.Errorf("after a non-owner's release and renewal on %s, the key is not held: %v", name, err)
		}
	}
	if err := holder.Release(ctx, key, owner); err != nil {
		t.Errorf("the owner's Release: %v", err)
	}
}

func TestNonOwnerCannotReleaseOrExtend(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		s := testserver.StartRedis(t, 1)
		conn, err := redlock.NewConnector("redis://" + s[0].Addr() + "?prefix=sec" + driver.NewOwner().String()[:8])
		if err != nil {
			t.Fatal(err)
		}
		nonOwner(t, conn, 5*time.Second, true)
	})
	t.Run("redlock", func(t *testing.T) {
		s := testserver.StartRedis(t, 3)
		conn, err := redlock.NewConnector("redis://" + s[0].Addr() + "," + s[1].Addr() + "," + s[2].Addr() + "?prefix=sec" + driver.NewOwner().String()[:8])
		if err != nil {
			t.Fatal(err)
		}
		nonOwner(t, conn, 5*time.Second, true)
	})
	t.Run("postgres", func(t *testing.T) {
		conn, err := postgres.NewConnector(testserver.PostgresDSN(t), postgres.WithNamespace("sec-"+driver.NewOwner().String()[:8]))
		if err != nil {
			t.Fatal(err)
		}
		nonOwner(t, conn, 0, false) // session locks do not expire: nothing to extend
	})
}
