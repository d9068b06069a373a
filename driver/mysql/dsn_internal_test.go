package mysql

import "testing"

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
