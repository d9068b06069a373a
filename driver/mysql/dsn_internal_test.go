package mysql

import (
	"strings"
	"testing"
)

// The URL form's TLS configuration is made for the URL's host, not for the
// default address go-sql-driver's parser saw (TestURLTLSChecksTheHost
// checks a handshake).
func TestURLTLSForItsHost(t *testing.T) {
	cfg := defaultConfig()
	mc, err := parseDSN("mysql://app:pw@db.example.com/app?tls=true", &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if mc.Addr != "db.example.com:3306" || mc.TLSConfig != "true" {
		t.Fatalf("Addr %q, tls %q", mc.Addr, mc.TLSConfig)
	}
	if mc.TLS != nil && mc.TLS.ServerName != "db.example.com" {
		t.Fatalf("the certificate would be checked against %q", mc.TLS.ServerName)
	}
}

// A short password is not cut out of every word that holds it (it would
// mangle the message and hide nothing); a real one is removed, escaped too.
func TestRedact(t *testing.T) {
	const msg = "dial tcp: connection refused on port 3306"
	if got := redact(msg, "on"); got != msg {
		t.Errorf("redact with a 2-byte password: %q", got)
	}
	if got := redact("bad s3cr/t and s3cr%2Ft", "s3cr/t"); strings.Contains(got, "s3cr") {
		t.Errorf("redact left the password: %q", got)
	}
}

// A bad value of one of go-sql-driver's parameters is said to be refused,
// not to be another driver's parameter.
func TestGoParamErrorText(t *testing.T) {
	cfg := defaultConfig()
	_, err := parseDSN("mysql://app@db/app?timeout=soon", &cfg)
	if err == nil || !strings.Contains(err.Error(), "refused") || strings.Contains(err.Error(), "not go-sql-driver's") {
		t.Fatalf("timeout=soon: %v", err)
	}
}
