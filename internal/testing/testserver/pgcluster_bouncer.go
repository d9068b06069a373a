package testserver

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PGBouncer is a pgbouncer a test started in front of a PGCluster. It
// serves two databases, both the cluster's postgres database: "txpool"
// in transaction pooling mode and "sesspool" in session pooling mode.
type PGBouncer struct {
	t      testing.TB
	Port   int
	log    string
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// PGBouncerOptions configures StartPGBouncer.
type PGBouncerOptions struct {
	// PoolSize is default_pool_size: server connections per database
	// (default 4).
	PoolSize int
	// RoundRobin sets server_round_robin = 1: idle server connections are
	// handed out in turn rather than the most recently used first.
	RoundRobin bool
}

// PGBouncerBinary returns the pgbouncer program, or ErrNoPGBouncer.
func PGBouncerBinary() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/bin/pgbouncer"} {
		if isExec(p) {
			return p, nil
		}
	}
	return "", ErrNoPGBouncer
}

// StartPGBouncer starts pgbouncer on a free loopback port in front of
// backend (reached over its unix socket, as postgres, trusted), run as the
// postgres OS user when the test runs as root, dying with the test binary
// and stopped when the test ends. Clients log in as postgres without a
// password. Without pgbouncer installed it skips t, even under
// MUTEXKIT_REQUIRE_SERVICES=1 (pgbouncer is optional).
func StartPGBouncer(t testing.TB, backend *PGCluster, opts PGBouncerOptions) *PGBouncer {
	t.Helper()
	bin, err := PGBouncerBinary()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	if opts.PoolSize == 0 {
		opts.PoolSize = 4
	}
	dir, err := os.MkdirTemp(backend.Dir, "pgbouncer")
	if err != nil {
		t.Fatal(err)
	}
	if err := backend.chown(dir); err != nil {
		t.Fatal(err)
	}
	auth := filepath.Join(dir, "users.txt")
	if err := backend.writeFile(auth, []byte(`"postgres" ""`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &PGBouncer{t: t, log: filepath.Join(dir, "pgbouncer.log")}
	t.Cleanup(b.Stop)
	rr := 0
	if opts.RoundRobin {
		rr = 1
	}
	for attempt := 0; ; attempt++ {
		if b.Port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		target := fmt.Sprintf("host=%s port=%d dbname=postgres user=postgres", backend.SocketDir, backend.Port)
		ini := fmt.Sprintf(`[databases]
txpool = %[1]s pool_mode=transaction
sesspool = %[1]s pool_mode=session

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[2]d
unix_socket_dir =
auth_type = trust
auth_file = %[3]s
pool_mode = transaction
default_pool_size = %[4]d
max_client_conn = 200
server_round_robin = %[5]d
ignore_startup_parameters = extra_float_digits
server_login_retry = 1
`, target, b.Port, auth, opts.PoolSize, rr)
		cfg := filepath.Join(dir, "pgbouncer.ini")
		if err := backend.writeFile(cfg, []byte(ini), 0o600); err != nil {
			t.Fatal(err)
		}
		err = b.start(bin, cfg, backend.runAs)
		if err == nil {
			return b
		}
		if attempt == 4 || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("start pgbouncer: %v", err)
		}
	}
}

func (b *PGBouncer) start(bin, cfg string, runAs *syscall.Credential) error {
	logFile, err := os.OpenFile(b.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, cfg) // foreground, so the parent-death signal holds
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = dieWithParent()
	cmd.SysProcAttr.Credential = runAs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgbouncer: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.mu.Lock()
	b.cmd, b.exited = cmd, exited
	b.mu.Unlock()
	return started{name: fmt.Sprintf("pgbouncer on port %d", b.Port), exited: exited, ping: b.ping,
		stop: b.Stop, log: b.log, timeout: pgStartTimeout, poll: 50 * time.Millisecond}.waitReady()
}

func (b *PGBouncer) ping() error {
	db, err := sql.Open("postgres", b.DSN("sesspool", ""))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// DSN returns a URL DSN to database db ("txpool" or "sesspool") through
// the bouncer, with extra query parameters (a=b&c=d) appended.
func (b *PGBouncer) DSN(db, extra string) string {
	dsn := fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.Port)), db)
	if extra != "" {
		dsn += "&" + extra
	}
	return dsn
}

// Stop kills pgbouncer; it is called when the test ends.
func (b *PGBouncer) Stop() {
	b.mu.Lock()
	cmd, exited := b.cmd, b.exited
	b.cmd = nil
	b.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		<-exited
	}
}
