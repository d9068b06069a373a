package testserver

import (
	"bufio"
	"crypto/tls"
	"errors"
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

// RedisAddrsEnv names the variable that points tests at existing Redis
// servers (comma-separated host:port) instead of starting their own.
const RedisAddrsEnv = "MUTEXKIT_REDIS_ADDRS"

const redisHowTo = "install the redis-server package or run scripts/services"

// redisStartTimeout bounds how long a started server may take to answer PING.
const redisStartTimeout = 20 * time.Second

// Redis is one redis-server a test reaches: a process it started, which it
// can kill, pause and restart, or an existing server named by
// MUTEXKIT_REDIS_ADDRS, which it can only use.
type Redis struct {
	t        testing.TB
	addr     string
	port     int
	dir      string
	conf     string // a config file, read first (sentinels need one to write)
	args     []string
	tls      *RedisTLS
	external bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	paused bool
}

// RedisTLS makes StartRedis serve TLS only, with the given PEM files.
type RedisTLS struct {
	CertFile, KeyFile string
}

// RedisOption configures the servers StartRedis starts.
type RedisOption func(*redisConfig)

type redisConfig struct {
	args []string
	tls  *RedisTLS
}

// WithRedisArgs passes extra arguments to every redis-server started, e.g.
// "--maxmemory-policy", "allkeys-lru".
func WithRedisArgs(args ...string) RedisOption {
	return func(c *redisConfig) { c.args = append(c.args, args...) }
}

// WithRedisTLS starts servers that accept only TLS. Existing servers from
// MUTEXKIT_REDIS_ADDRS are not used then: the test skips.
func WithRedisTLS(cfg RedisTLS) RedisOption {
	return func(c *redisConfig) { c.tls = &cfg }
}

// StartRedis returns n Redis servers answering PING, stopped when t ends.
// With MUTEXKIT_REDIS_ADDRS set it returns the first n servers listed there
// instead (skipping if fewer are listed). Without redis-server on PATH it
// skips t, or fails it under MUTEXKIT_REQUIRE_SERVICES=1.
func StartRedis(t testing.TB, n int, opts ...RedisOption) []*Redis {
	t.Helper()
	var cfg redisConfig
	for _, o := range opts {
		o(&cfg)
	}
	if env := os.Getenv(RedisAddrsEnv); env != "" && cfg.tls == nil && len(cfg.args) == 0 {
		var servers []*Redis
		for a := range strings.SplitSeq(env, ",") {
			if a = strings.TrimSpace(a); a != "" {
				servers = append(servers, &Redis{t: t, addr: a, external: true})
			}
		}
		if len(servers) < n {
			t.Skipf("%s lists %d servers; this test needs %d", RedisAddrsEnv, len(servers), n)
		}
		return servers[:n]
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		Unavailable(t, "redis-server", redisHowTo)
	}
	servers := make([]*Redis, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range servers {
		s := &Redis{t: t, dir: t.TempDir(), args: cfg.args, tls: cfg.tls}
		servers[i] = s
		t.Cleanup(s.stop)
		wg.Go(func() { errs[i] = s.startFresh() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	return servers
}

// Addr returns the server's host:port.
func (s *Redis) Addr() string { return s.addr }

// External reports whether the server came from MUTEXKIT_REDIS_ADDRS: then
// it cannot be killed, paused or restarted.
func (s *Redis) External() bool { return s.external }

func (s *Redis) needOwn(what string) {
	s.t.Helper()
	if s.external {
		s.t.Skipf("cannot %s %s: it is an existing server from %s", what, s.addr, RedisAddrsEnv)
	}
}

// startFresh picks a free port and starts the server on it, trying again
// if another process took the port first.
func (s *Redis) startFresh() error {
	var err error
	for range 5 {
		var port int
		if port, err = freePort(); err != nil {
			return err
		}
		s.port = port
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err = s.start(); err == nil {
			return nil
		}
	}
	return err
}

// start runs redis-server on s.port with no persistence, and waits until it
// answers PING.
func (s *Redis) start() error {
	args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no"}
	if s.tls != nil {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(s.port),
			"--tls-cert-file", s.tls.CertFile, "--tls-key-file", s.tls.KeyFile, "--tls-auth-clients", "no")
	} else {
		args = append(args, "--port", strconv.Itoa(s.port))
	}
	args = append(args, s.args...)
	if s.conf != "" {
		args = append([]string{s.conf}, args...) // redis-server takes a config file only as its first argument
	}
	logPath := filepath.Join(s.dir, fmt.Sprintf("redis-%d.log", s.port))
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command("redis-server", args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = dieWithParent() // a test binary killed by its timeout skips Cleanup
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited, s.paused = cmd, exited, false
	s.mu.Unlock()

	return started{name: fmt.Sprintf("redis-server on port %d", s.port), exited: exited, ping: s.ping,
		stop: s.kill, log: logPath, timeout: redisStartTimeout, poll: 20 * time.Millisecond}.waitReady()
}

// ping sends PING and waits for PONG.
func (s *Redis) ping() error {
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		return err
	}
	if s.tls != nil {
		c = tls.Client(c, &tls.Config{InsecureSkipVerify: true}) // readiness only
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") { // NOAUTH: up, with a password
		return fmt.Errorf("PING: %q", strings.TrimSpace(line))
	}
	return nil
}

// Kill ends the server with SIGKILL and waits for it to exit.
func (s *Redis) Kill() {
	s.t.Helper()
	s.needOwn("kill")
	s.kill()
}

func (s *Redis) kill() {
	s.mu.Lock()
	cmd, exited, paused := s.cmd, s.exited, s.paused
	s.cmd, s.paused = nil, false
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	if paused {
		cmd.Process.Signal(syscall.SIGCONT)
	}
	cmd.Process.Kill()
	<-exited
}

// Pause stops the server with SIGSTOP: connections stay open and nothing
// answers, as with a long GC pause or a frozen VM.
func (s *Redis) Pause() {
	s.t.Helper()
	s.needOwn("pause")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && !s.paused {
		s.cmd.Process.Signal(syscall.SIGSTOP)
		s.paused = true
	}
}

// Resume continues a paused server with SIGCONT.
func (s *Redis) Resume() {
	s.t.Helper()
	s.needOwn("resume")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.paused {
		s.cmd.Process.Signal(syscall.SIGCONT)
		s.paused = false
	}
}

// Restart kills the server and starts it again, empty, on the same port:
// a node restarted without persistence.
func (s *Redis) Restart() {
	s.t.Helper()
	s.needOwn("restart")
	s.kill()
	if err := s.start(); err != nil {
		s.t.Fatalf("restart redis-server: %v", err)
	}
}

// stop kills the server (continuing it first if paused) when the test ends.
func (s *Redis) stop() {
	if !s.external {
		s.kill()
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// RedisSupportsTLS reports whether the installed redis-server was built
// with TLS, and if not, why. It asks a server that cannot start (no key
// file): a build with TLS complains of the key, one without of the
// directive.
func RedisSupportsTLS() (bool, string) {
	cmd := exec.Command("redis-server", "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return false, fmt.Sprintf("redis-server: %v", err)
	}
	timer := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() }) // a build that starts anyway
	cmd.Wait()
	timer.Stop()
	text := out.String()
	switch {
	case strings.Contains(text, "Bad directive"):
		return false, "redis-server was built without TLS: " + lastLines(text, 2)
	case strings.Contains(text, "TLS") || strings.Contains(text, "tls"):
		return true, ""
	}
	return false, "cannot tell whether redis-server supports TLS: " + lastLines(text, 2)
}
