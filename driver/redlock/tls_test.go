package redlock_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/internal/testing/testserver"
	"github.com/mutexkit/mutexkit/mutex"
)

// TestTLS locks through rediss:// on a server that speaks only TLS, with a
// certificate made here and trusted through the DSN's tls_ca.
func TestTLS(t *testing.T) {
	if ok, why := testserver.RedisSupportsTLS(); !ok {
		t.Skipf("cannot test TLS: %s", why)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, certFile, keyFile)
	servers := testserver.StartRedis(t, 1, testserver.WithRedisTLS(testserver.RedisTLS{CertFile: certFile, KeyFile: keyFile}))
	addr := servers[0].Addr()

	cl, err := mutex.Open("rediss://" + addr + "?tls_ca=" + certFile)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Ping(t.Context()); err != nil {
		t.Fatalf("Ping over TLS: %v", err)
	}
	l, err := cl.NewMutex("tls", mutex.WithTTL(2*time.Second), mutex.WithFencing()).TryLock(t.Context())
	if err != nil {
		t.Fatalf("TryLock over TLS: %v", err)
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}

	// Not trusted: the handshake fails.
	bad, err := mutex.Open("rediss://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := bad.Ping(t.Context()); err == nil {
		t.Error("Ping trusting the system roots succeeded against a self-signed certificate")
	}
	// Plain text to a TLS port fails too.
	plain, _ := mutex.Open("redis://" + addr + "?timeout=500ms")
	defer plain.Close()
	if err := plain.Ping(t.Context()); err == nil {
		t.Error("plain-text Ping to a TLS-only port succeeded")
	}
}

// writeSelfSigned writes an ECDSA certificate for 127.0.0.1 and its key.
func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mutexkit test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}
