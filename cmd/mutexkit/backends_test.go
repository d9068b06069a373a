package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// The cron cases against the server backends: one run of three, all three
// in turn, a killed holder's program dies and the lock passes on, a lost
// lock stops the program.

// server is one backend under test.
type server struct {
	name string
	dsn  string
	// lose makes the lock on key vanish behind its holder's back.
	lose func(t *testing.T, key string)
	// ttlArgs go to every run: a short TTL on Redis, so a killed holder's
	// key frees soon.
	ttlArgs []string
	// redis is the node, for the Redis-only case of a lease about to lapse.
	redis *testserver.Redis
}

func postgresServer(t *testing.T) server {
	dsn := testserver.PostgresDSN(t)
	ns := fmt.Sprintf("cmd-%s-%d", t.Name(), time.Now().UnixNano())
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("MUTEXKIT_POSTGRES_DSN is not a URL")
	}
	q := u.Query()
	q.Set("mutexkit_namespace", ns)
	u.RawQuery = q.Encode()
	return server{
		name: "postgres",
		dsn:  u.String(),
		lose: func(t *testing.T, key string) {
			db, err := sql.Open("postgres", dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			classid, objid := postgres.LockTag(postgres.KeyID(ns, key))
			var n int
			err = db.QueryRowContext(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
				WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 1 AND granted`,
				classid, objid).Scan(&n)
			if err != nil || n != 1 {
				t.Fatalf("terminate the holder's session: %d sessions, %v", n, err)
			}
		},
	}
}

func redisServer(t *testing.T) server {
	node := testserver.StartRedis(t, 1)[0]
	return server{
		name:    "redis",
		redis:   node,
		dsn:     "redis://" + node.Addr(),
		ttlArgs: []string{"--ttl", "4s", "--grace", "1s"},
		lose: func(t *testing.T, key string) {
			c, err := redis.Dial("tcp", node.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Do("FLUSHALL"); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func TestServerBackends(t *testing.T) {
	t.Parallel()
	for _, mk := range []func(*testing.T) server{postgresServer, redisServer} {
		srv := mk(t)
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.vars = []string{"MUTEXKIT_DSN=" + srv.dsn, "TMPDIR=" + e.dir}
			t.Run("OneOfThree", func(t *testing.T) { testOneOfThree(t, e, srv) })
			t.Run("InTurn", func(t *testing.T) { testInTurn(t, e, srv) })
			t.Run("KilledHolder", func(t *testing.T) { testKilledHolder(t, e, srv) })
			t.Run("LostLock", func(t *testing.T) { testLostLock(t, e, srv) })
			if srv.redis != nil {
				t.Run("StoppedBeforeLapse", func(t *testing.T) { testStoppedBeforeLapse(t, e, srv) })
			}
		})
	}
}

func testOneOfThree(t *testing.T, e *env, srv server) {
	started := filepath.Join(e.dir, "started-"+srv.name)
	codes := make([]int, 3)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Go(func() {
			args := append([]string{"run", "--key", "cron"}, srv.ttlArgs...)
			codes[i], _, _ = e.run(append(args, "--", "sh", "-c", fmt.Sprintf("echo run >> %s; sleep 3", started))...)
		})
	}
	wg.Wait()
	ran, skipped := 0, 0
	for _, c := range codes {
		switch c {
		case 0:
			ran++
		case exitSkipped:
			skipped++
		}
	}
	if ran != 1 || skipped != 2 {
		t.Fatalf("exit codes %v; want one 0 and two %d", codes, exitSkipped)
	}
}

func testInTurn(t *testing.T, e *env, srv server) {
	log := filepath.Join(e.dir, "log-"+srv.name)
	job := fmt.Sprintf("echo start $$ >> %[1]s; sleep 0.3; echo end $$ >> %[1]s", log)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			args := append([]string{"run", "--key", "serial", "--wait", "1m"}, srv.ttlArgs...)
			if code, _, stderr := e.run(append(args, "--", "sh", "-c", job)...); code != 0 {
				t.Errorf("exit %d: %s", code, stderr)
			}
		})
	}
	wg.Wait()
	b, _ := os.ReadFile(log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 6 {
		t.Fatalf("log:\n%s\nwant 3 jobs", b)
	}
	for i := 0; i < len(lines); i += 2 {
		start, end := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if start[0] != "start" || end[0] != "end" || start[1] != end[1] {
			t.Fatalf("jobs overlapped:\n%s", b)
		}
	}
}

func testKilledHolder(t *testing.T, e *env, srv server) {
	pidFile := filepath.Join(e.dir, "pid-"+srv.name)
	args := append([]string{"run", "--key", "killed"}, srv.ttlArgs...)
	cmd := e.command(append(args, "--", "sh", "-c", fmt.Sprintf("echo $$ > %s; exec sleep 60", pidFile))...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, pidFile)
	cmd.Process.Kill()
	cmd.Wait()
	waitFor(t, "the program to die with mutexkit", func() bool { return !alive(pid) })
	// PostgreSQL frees the key when the session ends; Redis at the TTL:
	// wait for either with --wait.
	code, _, stderr := e.run(append(append([]string{"run", "--key", "killed", "--wait", "30s"}, srv.ttlArgs...), "--", "true")...)
	if code != 0 {
		t.Fatalf("run after the holder was killed: %d %s", code, stderr)
	}
}

func testLostLock(t *testing.T, e *env, srv server) {
	pidFile := filepath.Join(e.dir, "lost-"+srv.name)
	args := append([]string{"run", "--key", "lost", "--grace", "1s"}, srv.ttlArgs...)
	cmd := e.command(append(args, "--", "sh", "-c", fmt.Sprintf("echo $$ > %s; exec sleep 60", pidFile))...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, pidFile)
	srv.lose(t, "lost")
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitLost {
		t.Fatalf("exit %v; want the lost code %d; stderr:\n%s", err, exitLost, stderr.String())
	}
	if alive(pid) {
		t.Fatal("the program still runs after its lock was lost")
	}
}

// testStoppedBeforeLapse: when renewals fail (the node is paused), the
// program is stopped before its lease could lapse on the server. The lapse
// is bounded from the key's PTTL read just before the pause (a renewal in
// between only makes the real lapse later).
func testStoppedBeforeLapse(t *testing.T, e *env, srv server) {
	pidFile := filepath.Join(e.dir, "lapse-"+srv.name)
	// An 8s TTL: the loss margin (a tenth) is the room the check has.
	args := append(append([]string{"run", "--key", "lapse"}, srv.ttlArgs...), "--ttl", "8s", "--grace", "1s")
	// The program ignores SIGTERM: only the SIGKILL after --grace stops it,
	// and that too must come before the lapse.
	job := fmt.Sprintf("trap '' TERM; echo $$ > %s; while :; do sleep 0.05; done", pidFile)
	cmd := e.command(append(args, "--", "sh", "-c", job)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, pidFile)

	c, err := redis.Dial("tcp", srv.redis.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// The lease of the lock's list head (the redis driver's list protocol).
	lockKey := "mutexkit:{lapse}"
	head, err := redis.String(c.Do("LINDEX", lockKey, 0))
	if err != nil {
		t.Fatal(err)
	}
	lockKey += ":l:" + head
	pttl, err := redis.Int64(c.Do("PTTL", lockKey))
	lapse := time.Now().Add(time.Duration(pttl) * time.Millisecond)
	c.Close()
	if err != nil || pttl <= 0 {
		t.Fatalf("PTTL %s = %d, %v", lockKey, pttl, err)
	}
	srv.redis.Pause()
	defer srv.redis.Resume()
	waitFor(t, "the program to be stopped", func() bool { return !alive(pid) })
	left := time.Until(lapse)
	if left <= 0 {
		t.Fatalf("the program outlived its lease by %v: it ran unprotected", -left)
	}
	srv.redis.Resume()
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitLost || !strings.Contains(stderr.String(), "about to lapse") {
		t.Fatalf("exit %v, stderr %q; want the lost code after 'about to lapse'", err, stderr.String())
	}
	t.Logf("the program was gone %v before the lease could lapse", left.Round(time.Millisecond))
}

// TestGraceOnlyWhereLocksExpire: --grace is checked against the TTL only
// on a backend whose locks expire (Redis), where the message names both
// conditions; PostgreSQL and the file driver have no TTL, and take any
// --grace.
func TestGraceOnlyWhereLocksExpire(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ran := filepath.Join(e.dir, "ran")
	job := []string{"--", "sh", "-c", "touch " + ran}
	for _, srv := range []server{{name: "file", dsn: "file://" + filepath.Join(e.dir, "locks")}, postgresServer(t)} {
		for _, flags := range [][]string{{"--grace", "10s"}, {"--ttl", "1s", "--grace", "5s"}} {
			os.Remove(ran)
			args := append(append([]string{"run", "--key", "grace", "--dsn", srv.dsn}, flags...), job...)
			if code, _, stderr := e.run(args...); code != 0 || !fileExists(ran) {
				t.Errorf("%s %v: exit %d, %q; want the program run", srv.name, flags, code, stderr)
			}
		}
	}

	rs := redisServer(t)
	os.Remove(ran)
	code, _, stderr := e.run(append([]string{"run", "--key", "grace", "--dsn", rs.dsn, "--grace", "10s"}, job...)...)
	want := "mutexkit run: --grace 10s does not fit in the default --ttl 15s: this backend's locks expire, and the program must be stopped before its lease could lapse, so the TTL must be both at least 3 times --grace (30s) and at least --grace plus 2s (12s)"
	if code != exitUsage || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 || fileExists(ran) {
		t.Errorf("redis --grace 10s: exit %d, %q, program run %v; want %d and one line starting %q", code, stderr, fileExists(ran), exitUsage, want)
	}
	if code, out, _ := e.run("status", "--key", "grace", "--dsn", rs.dsn); code != 0 {
		t.Errorf("status after the refused run: exit %d, %q; want the lock released", code, out)
	}
	if code, _, stderr := e.run(append([]string{"run", "--key", "grace", "--dsn", rs.dsn, "--ttl", "30s", "--grace", "10s"}, job...)...); code != 0 || !fileExists(ran) {
		t.Errorf("redis --ttl 30s --grace 10s: exit %d, %q; want the program run", code, stderr)
	}
}

// deadPort is a local TCP port with nothing listening.
func deadPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// TestWaitEndsOnOutage: a --wait that runs out while the backend is
// unreachable is an outage (69, with the cause), not a held lock (75);
// one that runs out while the key is held is still a skip.
func TestWaitEndsOnOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ran := filepath.Join(e.dir, "ran")
	port := deadPort(t)
	for _, dsn := range []string{
		fmt.Sprintf("redis://:hunter2@127.0.0.1:%d", port),
		fmt.Sprintf("postgres://app:hunter2@127.0.0.1:%d/test?sslmode=disable", port),
	} {
		for _, wait := range []string{"0", "1s"} {
			code, _, stderr := e.run("run", "--key", "outage", "--wait", wait, "--dsn", dsn, "--", "touch", ran)
			if code != exitUnavailable || !strings.Contains(stderr, "connection refused") || strings.Contains(stderr, "held elsewhere") ||
				strings.Count(stderr, "\n") != 1 || strings.Contains(stderr, "hunter2") || fileExists(ran) {
				t.Errorf("%s --wait %s: exit %d, %q; want %d and one line with the cause, no password", dsn[:5], wait, code, stderr, exitUnavailable)
			}
		}
	}

	srv := redisServer(t)
	holder := e.command("run", "--key", "held", "--dsn", srv.dsn, "--", "sleep", "30")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	waitFor(t, "the lock to be held", func() bool {
		code, _, _ := e.run("status", "--key", "held", "--dsn", srv.dsn)
		return code == exitHeld
	})
	code, _, stderr := e.run("run", "--key", "held", "--wait", "500ms", "--dsn", srv.dsn, "--", "touch", ran)
	if code != exitSkipped || !strings.Contains(stderr, `lock "held" is held elsewhere; skipping`) || fileExists(ran) {
		t.Errorf("--wait that runs out on a held key: exit %d, %q; want the skip code", code, stderr)
	}
}

// TestDenied: a backend that refuses the credentials or database is a
// configuration error: exit 78 at once, even with --wait, with the cause
// and without the password.
func TestDenied(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ran := filepath.Join(e.dir, "ran")
	secured := testserver.StartRedis(t, 1, testserver.WithRedisArgs("--requirepass", "s3cret-right"))[0]
	pg, err := url.Parse(testserver.PostgresDSN(t))
	if err != nil {
		t.Fatal("MUTEXKIT_POSTGRES_DSN is not a URL")
	}
	pg.Path = "/mutexkit_no_such_database"
	for _, dsn := range []string{
		"redis://:hunter2@" + secured.Addr(), // wrong password
		"redis://127.0.0.1:6379/99",          // DB index out of range
		pg.String(),                          // no such database
	} {
		for _, args := range [][]string{
			{"run", "--key", "denied", "--wait", "1m", "--dsn", dsn, "--", "touch", ran},
			{"run", "--key", "denied", "--dsn", dsn, "--", "touch", ran},
			{"status", "--key", "denied", "--dsn", dsn},
		} {
			start := time.Now()
			code, _, stderr := e.run(args...)
			if code != exitDenied || strings.Count(stderr, "\n") != 1 || strings.Contains(stderr, "hunter2") || fileExists(ran) {
				t.Errorf("%s %v: exit %d, %q; want %d and one line without the password", dsn[:5], args[:4], code, stderr, exitDenied)
			}
			if waited := time.Since(start); waited > 30*time.Second {
				t.Errorf("%s %v: took %v; a refusal is not waited out", dsn[:5], args[:4], waited)
			}
		}
	}
}

// TestStatusSession: status names the holder's session on the backend,
// last, as the server's own views give it (PostgreSQL: the pid in pg_locks
// of the backend holding the key, whose application_name names the holding
// mutexkit run).
func TestStatusSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv := postgresServer(t)
	u, err := url.Parse(srv.dsn)
	if err != nil {
		t.Fatal(err)
	}
	ns := u.Query().Get("mutexkit_namespace")
	holder := e.command("run", "--key", "st", "--dsn", srv.dsn, "--", "sleep", "30")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	waitFor(t, "the lock to be held", func() bool {
		code, _, _ := e.run("status", "--key", "st", "--dsn", srv.dsn)
		return code == exitHeld
	})
	db, err := sql.Open("postgres", testserver.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	classid, objid := postgres.LockTag(postgres.KeyID(ns, "st"))
	var backend int
	var app string
	err = db.QueryRowContext(t.Context(), `SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1 AND l.granted`,
		int64(classid), int64(objid)).Scan(&backend, &app)
	if err != nil || !strings.Contains(app, fmt.Sprintf(" %d ", holder.Process.Pid)) {
		t.Fatalf("the holding backend in pg_locks: %d, %q, %v; want the run's pid %d in its application_name", backend, app, err, holder.Process.Pid)
	}
	code, out, _ := e.run("status", "--key", "st", "--dsn", srv.dsn)
	want := fmt.Sprintf("pid %d, session %d\n", holder.Process.Pid, backend)
	if code != exitHeld || !strings.HasPrefix(out, `"st" is held by `) || !strings.HasSuffix(out, want) {
		t.Fatalf("status: exit %d, %q; want %d and a line ending %q", code, out, exitHeld, want)
	}
}
