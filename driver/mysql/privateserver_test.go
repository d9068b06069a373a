package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
)

// privateServer is a MariaDB (or MySQL) server of one test's own, for
// faults that would disturb the shared one (a restart): its data
// directory and socket in t.TempDir(), a free loopback port, no grant
// tables (root without a password), killed when the test ends.
type privateServer struct {
	t                 *testing.T
	bin, dir, datadir string
	port              int
	cmd               *exec.Cmd
	exited            chan struct{} // closed when cmd has been waited for
}

// serverWait bounds every wait on the private server (start, stop).
const serverWait = 30 * time.Second

// startPrivateServer installs a data directory and starts the server. It
// skips t when mariadbd/mysqld or mariadb-install-db is missing, and fails
// it instead under MUTEXKIT_REQUIRE_SERVICES=1 with the default DSN, where
// scripts/services installs them (with MUTEXKIT_MYSQL_DSN set, the server
// may be elsewhere and the binaries rightly absent).
func startPrivateServer(t *testing.T) *privateServer {
	t.Helper()
	bin := findBinary("mariadbd", "/usr/sbin/mariadbd", "mysqld", "/usr/sbin/mysqld")
	install := findBinary("mariadb-install-db", "mysql_install_db")
	if bin == "" || install == "" {
		msg := "mariadbd and mariadb-install-db are not installed (scripts/services installs mariadb-server)"
		if os.Getenv("MUTEXKIT_REQUIRE_SERVICES") == "1" && os.Getenv("MUTEXKIT_MYSQL_DSN") == "" {
			t.Fatalf("%s and MUTEXKIT_REQUIRE_SERVICES=1", msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	s := &privateServer{t: t, bin: bin, dir: dir, datadir: filepath.Join(dir, "data"), port: freePort(t)}
	ctx, cancel := context.WithTimeout(t.Context(), serverWait)
	defer cancel()
	out, err := exec.CommandContext(ctx, install, "--no-defaults", "--datadir="+s.datadir, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", install, err, out)
	}
	t.Cleanup(s.kill)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	db := s.admin("")
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE test"); err != nil {
		t.Fatal(err)
	}
	return s
}

func findBinary(names ...string) string {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// freePort is a loopback port free a moment ago.
func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *privateServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// dsn is the URL DSN of database test as root.
func (s *privateServer) dsn() string { return "mysql://root@" + s.addr() + "/test" }

// admin is a pool on database db ("" none).
func (s *privateServer) admin(db string) *sql.DB {
	mc := gomysql.NewConfig()
	mc.User, mc.Net, mc.Addr, mc.DBName = "root", "tcp", s.addr(), db
	mc.Timeout = 3 * time.Second
	p, err := sql.Open("mysql", mc.FormatDSN())
	if err != nil {
		s.t.Fatal(err)
	}
	return p
}

// start runs the server on its port and data directory and waits until it
// answers a ping over TCP.
func (s *privateServer) start() error {
	cmd := exec.Command(s.bin, "--no-defaults", "--datadir="+s.datadir, "--user=root",
		"--bind-address=127.0.0.1", "--port="+strconv.Itoa(s.port),
		"--socket="+filepath.Join(s.dir, "s.sock"), "--pid-file="+filepath.Join(s.dir, "s.pid"),
		"--log-error="+filepath.Join(s.dir, "error.log"), "--skip-grant-tables",
		"--innodb-buffer-pool-size=32M", "--skip-name-resolve")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(s.exited)
	db := s.admin("")
	defer db.Close()
	for deadline := time.Now().Add(serverWait); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := db.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited at start: %s", s.bin, s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering after %v: %v", s.bin, serverWait, err)
		}
	}
}

// stop sends SIGTERM (a normal shutdown: the server closes its client
// connections) and waits for the process to exit.
func (s *privateServer) stop() error {
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(serverWait):
		s.kill()
		return errors.New("the server did not shut down within " + serverWait.String())
	}
}

// kill ends the server at once, if it runs.
func (s *privateServer) kill() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.exited:
	default:
		s.cmd.Process.Kill()
		<-s.exited
	}
}

func (s *privateServer) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "error.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
