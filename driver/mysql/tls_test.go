package mysql_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/mutexkit/mutexkit/driver/mysql"
)

// tlsGreeter answers a MySQL client with the real server's greeting, with
// TLS offered, and then a TLS handshake with a certificate for "localhost"
// alone; it reports the handshake's outcome. Nothing follows the handshake:
// the test is only about which name the client checks.
type tlsGreeter struct {
	ln      net.Listener
	outcome chan error
}

func newTLSGreeter(t *testing.T, server string, cert tls.Certificate) *tlsGreeter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &tlsGreeter{ln: ln, outcome: make(chan error, 8)}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.outcome <- greet(c, server, cert)
			c.Close()
		}
	}()
	return g
}

func readPacket(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	p := make([]byte, 4+n)
	copy(p, hdr[:])
	_, err := io.ReadFull(r, p[4:])
	return p, err
}

func greet(c net.Conn, server string, cert tls.Certificate) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := net.DialTimeout("tcp", server, 5*time.Second)
	if err != nil {
		return err
	}
	b.SetDeadline(time.Now().Add(10 * time.Second))
	hello, err := readPacket(b)
	b.Close()
	if err != nil {
		return err
	}
	// protocol version, server version (NUL-terminated), connection id (4),
	// scramble (8), filler (1), then the capability flags' low 2 bytes.
	pos := 4 + 1 + strings.IndexByte(string(hello[5:]), 0) + 1 + 4 + 8 + 1
	binary.LittleEndian.PutUint16(hello[pos:], binary.LittleEndian.Uint16(hello[pos:])|0x0800) // CLIENT_SSL
	if _, err := c.Write(hello); err != nil {
		return err
	}
	if _, err := readPacket(c); err != nil { // the client's SSL request
		return err
	}
	return tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}}).Handshake()
}

// localhostCert is a self-signed certificate for the DNS name localhost
// (no IP address), and a pool that trusts it.
func localhostCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mutexkit test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		DNSNames:              []string{"localhost"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// tls=true and a registered TLS configuration in the URL form check the
// server's certificate against the URL's host. go-sql-driver's parser,
// given the parameters alone, had made the configuration for 127.0.0.1.
func TestURLTLSChecksTheHost(t *testing.T) {
	dsn, _ := testDSN(t)
	cert, pool := localhostCert(t)
	g := newTLSGreeter(t, hostPort(t, dsn), cert)
	_, port, _ := net.SplitHostPort(g.ln.Addr().String())
	if err := gomysql.RegisterTLSConfig("mutexkit-test", &tls.Config{RootCAs: pool}); err != nil {
		t.Fatal(err)
	}
	defer gomysql.DeregisterTLSConfig("mutexkit-test")

	connect := func(tlsParam string) error {
		conn, err := mysql.NewConnector("mysql://root@localhost:" + port + "/test?tls=" + tlsParam)
		if err != nil {
			t.Fatal(err)
		}
		_, err = conn.Connect(t.Context())
		if err == nil {
			t.Fatal("Connect succeeded against a server that stops after the TLS handshake")
		}
		return err
	}

	// A registered configuration that trusts the certificate: the
	// handshake succeeds, as the name checked is localhost's.
	connect("mutexkit-test")
	if err := <-g.outcome; err != nil {
		t.Errorf("tls=mutexkit-test: the handshake failed: %v", err)
	}

	// tls=true trusts the system's roots, which do not hold the test's
	// certificate: the client refuses it for its signer, not its name.
	err := connect("true")
	<-g.outcome
	var badName x509.HostnameError
	if errors.As(err, &badName) || strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("tls=true: the certificate was checked against another name: %v", err)
	}
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("tls=true: %v; want the certificate refused for its signer", err)
	}
}
