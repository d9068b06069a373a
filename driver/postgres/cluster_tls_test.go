package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// TLS against a server with a certificate generated for the test:
// sslmode=verify-full with sslrootcert = its CA connects (over TLS: the
// server accepts only hostssl) and locks; a CA that did not sign the
// server's certificate, and a certificate for another host name, fail
// clearly, and so does a plaintext connection.
func TestClusterTLSVerifyFull(t *testing.T) {
	pg := testserver.StartPGCluster(t, testserver.PGClusterOptions{TLS: true, Password: true})
	admin := pg.AdminDB()
	defer admin.Close()
	verify := func(mode, rootcert string) url.Values {
		return url.Values{"sslmode": {mode}, "sslrootcert": {rootcert}}
	}

	for _, host := range []string{"127.0.0.1", "localhost"} {
		dsn := pg.DSN(host, verify("verify-full", pg.CAFile))
		if err := pingErr(t, dsn); err != nil {
			t.Fatalf("verify-full to %s: %v", host, err)
		}
		if role := lockOnce(t, dsn, admin); role != pg.User {
			t.Errorf("lock held by %q; want %q", role, pg.User)
		}
	}
	// The lock sessions really ran over TLS.
	c := openClient(t, pg.DSN("", verify("verify-full", pg.CAFile)), t.Name())
	lease, err := c.NewMutex("tls").TryLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var n, ssl int
	err = admin.QueryRow(`SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.application_name LIKE 'mutexkit %' AND a.usename = $1`, pg.User).Scan(&n, &ssl)
	if err != nil || n == 0 || ssl != n {
		t.Errorf("lock sessions: %d, over TLS: %d (%v); want all over TLS", n, ssl, err)
	}
	// A waiter (whose waiter session also verifies the server) gets
	// the key once it is released.
	c2 := openClient(t, pg.DSN("localhost", verify("verify-full", pg.CAFile)), t.Name())
	got := make(chan error, 1)
	go func() {
		l2, err := c2.NewMutex("tls").Lock(t.Context())
		if err == nil {
			err = l2.Unlock(context.Background())
		}
		got <- err
	}()
	waitWaiting(t, admin, pg.User)
	if err := lease.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}

	// Plaintext: pg_hba has only hostssl lines.
	if err := pingErr(t, pg.DSN("", nil)); err == nil || !strings.Contains(err.Error(), "no encryption") {
		t.Errorf("sslmode=disable: %v; want the server's refusal of a connection with no encryption", err)
	} else {
		checkKind(t, "sslmode=disable", err, driver.ErrDenied) // pg_hba.conf refuses it (28000)
		t.Logf("plaintext: %v", err)
	}

	// A CA that did not sign the server's certificate.
	other, err := testserver.NewTestCA()
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(t.TempDir(), "other-ca.crt")
	if err := os.WriteFile(otherFile, other.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"verify-full", "verify-ca"} {
		err := pingErr(t, pg.DSN("", verify(mode, otherFile)))
		checkTLSErr(t, mode+" with another CA", err, pg.Password, "unknown authority")
	}

	// A certificate for another host name, from the right CA: verify-full
	// refuses it, verify-ca (which checks only the chain) accepts it.
	pg.RotateServerCert("db.mutexkit.invalid", "127.0.0.2")
	for _, host := range []string{"127.0.0.1", "localhost"} {
		err = pingErr(t, pg.DSN(host, verify("verify-full", pg.CAFile)))
		checkTLSErr(t, "verify-full to "+host+", which the certificate does not name", err, pg.Password, "not "+host)
	}
	if err := pingErr(t, pg.DSN("", verify("verify-ca", pg.CAFile))); err != nil {
		t.Errorf("verify-ca with the right CA after the rotation: %v", err)
	}
}

// waitWaiting waits until a client of role waits in the server's lock
// queue (an ungranted advisory lock: see wait.go), so a release is sure to
// find it waiting.
func waitWaiting(t *testing.T, admin *sql.DB, role string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		err := admin.QueryRow(`SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE l.locktype = 'advisory' AND NOT l.granted AND a.usename = $1`, role).Scan(&n)
		if err == nil && n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no waiter of %s in the queue within 30s (%v)", role, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func checkTLSErr(t *testing.T, what string, err error, password, want string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: connected", what)
		return
	case !strings.Contains(err.Error(), "x509") || !strings.Contains(err.Error(), want):
		t.Errorf("%s: %v; want an x509 error mentioning %q", what, err, want)
	case !errors.Is(err, driver.ErrUnavailable):
		t.Errorf("%s: %v; want it to match driver.ErrUnavailable", what, err)
	case strings.Contains(err.Error(), password):
		t.Errorf("%s: the error carries the password: %v", what, err)
	}
	t.Logf("%s: %v", what, err)
}
