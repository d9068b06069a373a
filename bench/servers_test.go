package bench

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq" // database/sql's "postgres", for the floor and the admin queries
)

// The servers every benchmark of this process shares: started on first
// need, stopped when the process ends.
var servers struct {
	mu    sync.Mutex
	redis []*exec.Cmd
	addrs []string
	err   error
}

// maxRedisNodes is the most nodes a benchmark uses.
const maxRedisNodes = 5

func TestMain(m *testing.M) {
	code := m.Run()
	stopRedis()
	stopClusters()
	os.Exit(code)
}

// unavailable skips b, or fails it under MUTEXKIT_REQUIRE_SERVICES=1.
func unavailable(b testing.TB, what, how string) {
	b.Helper()
	if os.Getenv("MUTEXKIT_REQUIRE_SERVICES") == "1" {
		b.Fatalf("%s is unavailable and MUTEXKIT_REQUIRE_SERVICES=1: %s", what, how)
	}
	b.Skipf("%s is unavailable (%s); set MUTEXKIT_REQUIRE_SERVICES=1 to fail instead", what, how)
}

// serverCPUs is the CPU list the servers are pinned to, or "".
func serverCPUs() string { return os.Getenv("MUTEXKIT_BENCH_SERVER_CPUS") }

// redisAddrs returns the addresses of n independent Redis servers:
// MUTEXKIT_REDIS_ADDRS if set, else redis-server processes this process
// starts on free loopback ports (on MUTEXKIT_BENCH_SERVER_CPUS if set).
func redisAddrs(b testing.TB, n int) []string {
	b.Helper()
	if env := os.Getenv("MUTEXKIT_REDIS_ADDRS"); env != "" {
		addrs := strings.Split(env, ",")
		if len(addrs) < n {
			b.Skipf("MUTEXKIT_REDIS_ADDRS lists %d servers; this benchmark needs %d", len(addrs), n)
		}
		return addrs[:n]
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		unavailable(b, "redis-server", "install the redis-server package or run scripts/services")
	}
	servers.mu.Lock()
	defer servers.mu.Unlock()
	if servers.addrs == nil && servers.err == nil {
		for range maxRedisNodes {
			addr, cmd, err := startRedis()
			if err != nil {
				servers.err = err
				break
			}
			servers.redis = append(servers.redis, cmd)
			servers.addrs = append(servers.addrs, addr)
		}
	}
	if servers.err != nil {
		b.Fatalf("start redis-server: %v", servers.err)
	}
	return servers.addrs[:n]
}

// startRedis runs one redis-server without persistence on a free port and
// waits until it answers PING.
func startRedis() (string, *exec.Cmd, error) {
	var err error
	for range 5 { // another process may take the port first
		var l net.Listener
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return "", nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		args := []string{"redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"}
		if cpus := serverCPUs(); cpus != "" {
			args = append([]string{"taskset", "-c", cpus}, args...)
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = os.TempDir()
		if err = cmd.Start(); err != nil {
			return "", nil, err
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if err = pingRedis(addr); err == nil {
				return addr, cmd, nil
			}
			select {
			case werr := <-exited:
				err = fmt.Errorf("redis-server on port %d exited: %v", port, werr)
			case <-time.After(10 * time.Millisecond):
				continue
			}
			break
		}
		cmd.Process.Kill()
	}
	return "", nil, err
}

func pingRedis(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err == nil && !strings.HasPrefix(line, "+PONG") {
		err = fmt.Errorf("PING: %q", line)
	}
	return err
}

func stopRedis() {
	servers.mu.Lock()
	defer servers.mu.Unlock()
	for _, cmd := range servers.redis {
		cmd.Process.Kill()
		cmd.Wait()
	}
	servers.redis, servers.addrs = nil, nil
}

// defaultPostgresDSN is where PostgreSQL is found when
// MUTEXKIT_POSTGRES_DSN is not set.
const defaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// postgresDSN returns the DSN of a PostgreSQL server that answers, or skips
// (fails) b.
func postgresDSN(b testing.TB) string {
	b.Helper()
	dsn := os.Getenv("MUTEXKIT_POSTGRES_DSN")
	if dsn == "" {
		dsn = defaultPostgresDSN
	}
	db, err := sql.Open("postgres", dsn)
	if err == nil {
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = db.PingContext(ctx)
	}
	if err != nil {
		unavailable(b, "PostgreSQL at MUTEXKIT_POSTGRES_DSN (default "+defaultPostgresDSN+")",
			"run scripts/services, or point MUTEXKIT_POSTGRES_DSN at a server")
	}
	return dsn
}

// withAppName returns dsn with application_name set, so that the floor's
// backend can be found in pg_stat_activity.
func withAppName(dsn, name string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return dsn + sep + "application_name=" + strings.ReplaceAll(name, " ", "%20")
	}
	return dsn + " application_name='" + name + "'"
}

// ourAppPattern matches the application_name of every backend this
// process opened: the postgres driver's "mutexkit <client> <pid> <host>"
// and the floor's "mutexkit-bench <pid>".
func ourAppPattern() string { return "% " + strconv.Itoa(os.Getpid()) + "%" }

// postgresBackends returns the pids of this process's PostgreSQL backends.
func postgresBackends(b testing.TB, dsn string) []int {
	b.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'mutexkit%' AND application_name LIKE $1`, ourAppPattern())
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	var pids []int
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			b.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return pids
}

// pinPostgres moves this process's PostgreSQL backends to the server CPUs,
// when they are set (and the server is local: pids are only meaningful
// here then).
func pinPostgres(b testing.TB, dsn string) {
	b.Helper()
	cpus := serverCPUs()
	if cpus == "" {
		return
	}
	var errs []error
	for _, pid := range postgresBackends(b, dsn) {
		if out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(pid)).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("taskset %d: %v: %s", pid, err, out))
		}
	}
	if err := errors.Join(errs...); err != nil {
		b.Logf("pinning PostgreSQL backends (left where they are): %v", err)
	}
}
