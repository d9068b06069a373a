package testserver

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PGClusterOptions configures a private PostgreSQL cluster started by
// StartPGCluster. The zero value is a cluster that trusts every loopback
// connection, without TLS.
type PGClusterOptions struct {
	// Password creates the role PGClusterRole with a generated password and
	// makes every TCP login use scram-sha-256 (the unix socket, used by
	// AdminDSN, stays trusted).
	Password bool
	// TLS turns on ssl with a server certificate from a CA generated for
	// the cluster (SANs 127.0.0.1 and localhost), and accepts TCP logins
	// only over TLS (pg_hba hostssl lines).
	TLS bool
	// Settings are extra server settings (name -> value), passed as -c.
	Settings map[string]string
}

// PGClusterRole is the role Password clusters create for TCP logins.
const PGClusterRole = "mutexkit_test"

const pgHowTo = "install the postgresql package (apt-get install -y postgresql) or run scripts/services"

// pgStartTimeout bounds how long a server may take to accept connections
// (a standby replays WAL first). Generous: CI machines are loaded.
const pgStartTimeout = 90 * time.Second

// PGCluster is a private PostgreSQL server a test started: its own data
// directory in a temporary directory, on a free loopback port, run as the
// postgres OS user when the test runs as root. It is stopped (an immediate
// shutdown) and its directory removed when the test ends, and it dies with
// the test binary.
type PGCluster struct {
	t testing.TB

	// Port is the TCP port on 127.0.0.1.
	Port int
	// Dir holds the data directory, the socket and the certificates.
	Dir string
	// DataDir is the data directory.
	DataDir string
	// SocketDir is the unix socket directory (used by AdminDSN).
	SocketDir string
	// User and Password log in over TCP: PGClusterRole and a generated
	// password with PGClusterOptions.Password, else postgres and "".
	User, Password string
	// CA is the certificate authority of the server's certificate when TLS
	// is on; CAFile is its PEM file, for sslrootcert.
	CA     *TestCA
	CAFile string

	bin    string
	opts   PGClusterOptions
	runAs  *syscall.Credential
	uid    int
	gid    int
	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	log    string
}

// PGBinDir returns the directory of initdb and postgres: MUTEXKIT_PG_BINDIR,
// else the newest /usr/lib/postgresql/<version>/bin (Debian's layout), else
// the directory of initdb on PATH. It reports "" when there is none.
func PGBinDir() string {
	if d := os.Getenv("MUTEXKIT_PG_BINDIR"); d != "" {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d
		}
		return ""
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersionOf(dirs[i]) < pgVersionOf(dirs[j]) })
	for i := len(dirs) - 1; i >= 0; i-- {
		if isExec(filepath.Join(dirs[i], "initdb")) && isExec(filepath.Join(dirs[i], "postgres")) {
			return dirs[i]
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if d := filepath.Dir(p); isExec(filepath.Join(d, "postgres")) {
			return d
		}
	}
	return ""
}

func pgVersionOf(bindir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(bindir)), 64)
	return v
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// StartPGCluster starts a private PostgreSQL cluster for t and waits until
// it accepts connections. Without initdb and postgres it skips t (fails it
// under MUTEXKIT_REQUIRE_SERVICES=1).
func StartPGCluster(t testing.TB, opts PGClusterOptions) *PGCluster {
	t.Helper()
	bin := PGBinDir()
	if bin == "" {
		Unavailable(t, "PostgreSQL server binaries (initdb, postgres)", pgHowTo+"; or set MUTEXKIT_PG_BINDIR")
	}
	c := newPGCluster(t, bin, opts)
	tmpl, err := pgTemplate(c)
	if err != nil {
		t.Fatalf("initdb: %v", err)
	}
	if out, err := exec.Command("cp", "-a", tmpl, c.DataDir).CombinedOutput(); err != nil {
		t.Fatalf("copy the initdb template: %v: %s", err, out)
	}
	if opts.TLS {
		if c.CA, err = NewTestCA(); err != nil {
			t.Fatal(err)
		}
		c.CAFile = filepath.Join(c.Dir, "ca.crt")
		if err := c.writeFile(c.CAFile, c.CA.CertPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := c.writeServerCert("127.0.0.1", "localhost"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.writeHBA(); err != nil {
		t.Fatal(err)
	}
	if err := c.startFresh(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	if opts.Password {
		pw := make([]byte, 12)
		rand.Read(pw)
		c.User, c.Password = PGClusterRole, "pw-"+hex.EncodeToString(pw)
		db := c.AdminDB()
		defer db.Close()
		for _, q := range []string{
			`CREATE ROLE ` + PGClusterRole + ` LOGIN PASSWORD '` + c.Password + `'`,
			`GRANT CREATE ON SCHEMA public TO ` + PGClusterRole,
		} {
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("create the test role: %v", err)
			}
		}
	}
	return c
}

// newPGCluster makes the cluster's directory (short, for the socket path
// limit) owned by the user the server runs as, removed when t ends.
func newPGCluster(t testing.TB, bin string, opts PGClusterOptions) *PGCluster {
	t.Helper()
	c := &PGCluster{t: t, bin: bin, opts: opts, User: "postgres", uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			Unavailable(t, "the postgres OS user (PostgreSQL refuses to run as root)", pgHowTo)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.uid, c.gid = uid, gid
		c.runAs = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "mkpg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs after stop: cleanups are LIFO
	if err := c.chown(dir); err != nil {
		t.Fatal(err)
	}
	c.Dir, c.DataDir, c.SocketDir = dir, filepath.Join(dir, "data"), dir
	c.log = filepath.Join(dir, "postgres.log")
	t.Cleanup(c.Stop)
	return c
}

func (c *PGCluster) chown(path string) error {
	if c.uid < 0 {
		return nil
	}
	return os.Chown(path, c.uid, c.gid)
}

func (c *PGCluster) writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(path, mode); err != nil {
		return err
	}
	return c.chown(path)
}

// command runs a PostgreSQL program as the server's user, dying with the
// test binary.
func (c *PGCluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.SysProcAttr = dieWithParent()
	cmd.SysProcAttr.Credential = c.runAs // set before Pdeathsig by the runtime, so it stays
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C", "PGTZ=UTC")
	return cmd
}

var pgTemplates sync.Map // bin dir -> *pgTemplateOnce

type pgTemplateOnce struct {
	once sync.Once
	dir  string
	err  error
}

// pgTemplate returns a freshly initdb'ed data directory to copy, made once
// per test binary and server version (initdb takes seconds; a copy does
// not). It lives in the system temporary directory, reused by later runs:
// a complete one has the file "mutexkit-template-ok".
func pgTemplate(c *PGCluster) (string, error) {
	v, _ := pgTemplates.LoadOrStore(c.bin, &pgTemplateOnce{})
	o := v.(*pgTemplateOnce)
	o.once.Do(func() {
		sum := strings.NewReplacer("/", "_", ".", "_").Replace(strings.Trim(c.bin, "/"))
		o.dir = filepath.Join(os.TempDir(), fmt.Sprintf("mutexkit-pgtemplate-%d-%s", os.Geteuid(), sum))
		if _, err := os.Stat(filepath.Join(o.dir, "mutexkit-template-ok")); err == nil {
			return
		}
		tmp, err := os.MkdirTemp("", "mkpginit")
		if err != nil {
			o.err = err
			return
		}
		defer os.RemoveAll(tmp)
		if o.err = c.chown(tmp); o.err != nil {
			return
		}
		data := filepath.Join(tmp, "data")
		out, err := c.command("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
			"--locale=C", "--no-sync", "--no-instructions").CombinedOutput()
		if err != nil {
			o.err = fmt.Errorf("%v: %s", err, lastLines(string(out), 5))
			return
		}
		if o.err = os.WriteFile(filepath.Join(data, "mutexkit-template-ok"), nil, 0o644); o.err != nil {
			return
		}
		if err := os.Rename(data, o.dir); err != nil {
			// Another test binary made it first: use that one.
			if _, serr := os.Stat(filepath.Join(o.dir, "mutexkit-template-ok")); serr != nil {
				o.err = err
			}
		}
	})
	return o.dir, o.err
}

// writeHBA writes pg_hba.conf: the unix socket trusted (AdminDSN, and
// pg_basebackup), TCP on loopback by password or trust, over TLS only
// when TLS is on.
func (c *PGCluster) writeHBA() error {
	method := "trust"
	if c.opts.Password {
		method = "scram-sha-256"
	}
	kind := "host"
	if c.opts.TLS {
		kind = "hostssl"
	}
	hba := fmt.Sprintf("local all all trust\nlocal replication all trust\n%[1]s all all 127.0.0.1/32 %[2]s\n%[1]s all all ::1/128 %[2]s\n", kind, method)
	return c.writeFile(filepath.Join(c.DataDir, "pg_hba.conf"), []byte(hba), 0o600)
}

func (c *PGCluster) writeServerCert(hosts ...string) error {
	certPEM, keyPEM, err := c.CA.Issue(hosts...)
	if err != nil {
		return err
	}
	if err := c.writeFile(filepath.Join(c.Dir, "server.crt"), certPEM, 0o644); err != nil {
		return err
	}
	return c.writeFile(filepath.Join(c.Dir, "server.key"), keyPEM, 0o600)
}

// RotateServerCert replaces the server's certificate with one for hosts,
// from the same CA, reloads the configuration, and waits until new
// connections get it.
func (c *PGCluster) RotateServerCert(hosts ...string) {
	c.t.Helper()
	if c.CA == nil {
		c.t.Fatal("RotateServerCert: the cluster has no TLS")
	}
	if err := c.writeServerCert(hosts...); err != nil {
		c.t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(c.Dir, "server.crt"))
	if err != nil {
		c.t.Fatal(err)
	}
	db := c.AdminDB()
	defer db.Close()
	if _, err := db.Exec(`SELECT pg_reload_conf()`); err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(pgStartTimeout)
	for {
		got, err := PGServerCert(net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)))
		if err == nil && pemEqualsDER(want, got) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the server did not take its new certificate within %v (last: %v)", pgStartTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *PGCluster) startFresh() error {
	var err error
	for range 5 {
		if c.Port, err = freePort(); err != nil {
			return err
		}
		if err = c.start(); err == nil {
			return nil
		}
		if !strings.Contains(err.Error(), "could not bind") && !strings.Contains(err.Error(), "could not create") {
			return err
		}
	}
	return err
}

// start runs postgres in the foreground (so the parent-death signal holds)
// and waits until it accepts connections on its socket.
func (c *PGCluster) start() error {
	args := []string{"-D", c.DataDir, "-p", strconv.Itoa(c.Port), "-k", c.SocketDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB", "-c", "max_connections=60",
		"-c", "max_wal_senders=4", "-c", "wal_level=replica",
		"-c", "logging_collector=off", "-c", "log_min_messages=warning",
	}
	if c.opts.TLS {
		args = append(args, "-c", "ssl=on",
			"-c", "ssl_cert_file="+filepath.Join(c.Dir, "server.crt"),
			"-c", "ssl_key_file="+filepath.Join(c.Dir, "server.key"))
	}
	keys := make([]string, 0, len(c.opts.Settings))
	for k := range c.opts.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+c.opts.Settings[k])
	}
	logFile, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := c.command("postgres", args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	c.mu.Lock()
	c.cmd, c.exited = cmd, exited
	c.mu.Unlock()

	return started{name: fmt.Sprintf("postgres on port %d", c.Port), exited: exited, ping: c.ping,
		stop: c.Stop, log: c.log, timeout: pgStartTimeout, poll: 50 * time.Millisecond}.waitReady()
}

func (c *PGCluster) ping() error {
	db, err := sql.Open("postgres", c.AdminDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// Stop shuts the server down at once (as pg_ctl stop -m immediate: SIGQUIT
// to the postmaster) and waits for it; it is called when the test ends.
func (c *PGCluster) Stop() {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// Addr returns the server's 127.0.0.1:port.
func (c *PGCluster) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)) }

// AdminDSN reaches the server as the superuser postgres over the unix
// socket (trusted), in keyword form.
func (c *PGCluster) AdminDSN() string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", c.SocketDir, c.Port)
}

// AdminDB opens AdminDSN; the caller closes it.
func (c *PGCluster) AdminDB() *sql.DB {
	db, err := sql.Open("postgres", c.AdminDSN())
	if err != nil {
		c.t.Fatal(err)
	}
	return db
}

// DSN returns a URL DSN over TCP to host (127.0.0.1 when empty) as User
// with Password, database postgres, with the query parameters given
// (sslmode=disable unless one of them sets sslmode).
func (c *PGCluster) DSN(host string, params url.Values) string {
	if host == "" {
		host = "127.0.0.1"
	}
	q := url.Values{}
	for k, vs := range params {
		q[k] = vs
	}
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(host, strconv.Itoa(c.Port)), Path: "/postgres", RawQuery: q.Encode()}
	if c.Password != "" {
		u.User = url.UserPassword(c.User, c.Password)
	} else {
		u.User = url.User(c.User)
	}
	return u.String()
}

// StartStandby makes a hot standby of c (pg_basebackup -R over c's unix
// socket), starts it on a free port and waits until it accepts
// connections: pg_is_in_recovery() is true there. It has c's settings,
// pg_hba.conf and certificate.
func (c *PGCluster) StartStandby() *PGCluster {
	c.t.Helper()
	s := newPGCluster(c.t, c.bin, c.opts)
	s.User, s.Password, s.CA = c.User, c.Password, c.CA
	if c.CA != nil {
		s.CAFile = filepath.Join(s.Dir, "ca.crt")
		for _, f := range []string{"ca.crt", "server.crt", "server.key"} {
			data, err := os.ReadFile(filepath.Join(c.Dir, f))
			if err == nil {
				mode := os.FileMode(0o644)
				if f == "server.key" {
					mode = 0o600
				}
				err = s.writeFile(filepath.Join(s.Dir, f), data, mode)
			}
			if err != nil {
				c.t.Fatal(err)
			}
		}
	}
	out, err := s.command("pg_basebackup", "-h", c.SocketDir, "-p", strconv.Itoa(c.Port), "-U", "postgres",
		"-D", s.DataDir, "-R", "-X", "stream", "-c", "fast", "--no-sync").CombinedOutput()
	if err != nil {
		c.t.Fatalf("pg_basebackup: %v: %s", err, lastLines(string(out), 5))
	}
	if err := s.startFresh(); err != nil {
		c.t.Fatalf("start the standby: %v", err)
	}
	db := s.AdminDB()
	defer db.Close()
	var rec bool
	if err := db.QueryRow(`SELECT pg_is_in_recovery()`).Scan(&rec); err != nil || !rec {
		c.t.Fatalf("the standby: pg_is_in_recovery() = %v, %v; want true", rec, err)
	}
	return s
}

// ErrNoPGBouncer is reported by PGBouncerBinary when pgbouncer is missing.
var ErrNoPGBouncer = errors.New("pgbouncer is not installed (apt-get install -y pgbouncer, or scripts/services)")
