package main

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	_ "github.com/lib/pq" // database/sql's "postgres", to ask the server's version
)

// machine is what the page says about where the figures come from.
type machine struct {
	cpu, kernel, goVersion, goarch string
	nproc                          int
	redis, postgres, mysql         string
	commit, dirty                  string
	clientCPUs, serverCPUs         string
	loadBefore, loadAfter          string
	loads                          []float64 // 1-minute load average before each benchmark
	started                        time.Time
	elapsed                        time.Duration
}

func describeMachine(cfg config) machine {
	m := machine{
		nproc:      runtime.NumCPU(),
		goarch:     runtime.GOARCH,
		cpu:        cpuModel(),
		kernel:     output("uname", "-sr"),
		goVersion:  output("go", "env", "GOVERSION"),
		redis:      output("redis-server", "--version"),
		postgres:   postgresVersion(),
		mysql:      mysqlVersion(),
		commit:     output("git", "rev-parse", "--short", "HEAD"),
		clientCPUs: cfg.clientCPUs,
		serverCPUs: cfg.serverCPUs,
		loadBefore: loadAvg(),
		started:    time.Now().UTC(),
	}
	// Uncommitted changes to the library itself make the figures
	// provisional: say which.
	if st := output("git", "status", "--porcelain", "--untracked-files=no", "--", "../driver", "../mutex", "../middleware"); st != "" {
		var files []string
		for line := range strings.SplitSeq(st, "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				files = append(files, f[len(f)-1])
			}
		}
		m.dirty = strings.Join(files, ", ")
	}
	if v, _, ok := strings.Cut(m.redis, " sha="); ok {
		m.redis = v
	}
	return m
}

func output(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// load1 is the 1-minute load average, or 0 if unknown.
func load1() float64 {
	f := strings.Fields(loadAvg())
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// busy reports the median and highest 1-minute load average seen during
// the rounds, and whether the machine was busier than the benchmarks make
// it (a client and its servers: about two runnable threads).
func (m machine) busy() (median, highest float64, busy bool) {
	if len(m.loads) == 0 {
		return 0, 0, false
	}
	loads := slices.Sorted(slices.Values(m.loads))
	median, highest = loads[len(loads)/2], loads[len(loads)-1]
	return median, highest, median > float64(m.nproc)+1
}

// mysqlVersion asks the server at MUTEXKIT_MYSQL_DSN (a mysql:// URL), as
// the benchmarks find it.
func mysqlVersion() string {
	dsn := os.Getenv("MUTEXKIT_MYSQL_DSN")
	if dsn == "" {
		dsn = "mysql://root@127.0.0.1:3306/test"
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "unknown"
	}
	mc := gomysql.NewConfig()
	mc.User = u.User.Username()
	mc.Passwd, _ = u.User.Password()
	mc.Net, mc.Addr, mc.Timeout = "tcp", u.Host, 3*time.Second
	return serverVersion("mysql", mc.FormatDSN(), "SELECT VERSION()")
}

func postgresVersion() string {
	dsn := os.Getenv("MUTEXKIT_POSTGRES_DSN")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	v := serverVersion("postgres", dsn, "SHOW server_version")
	if v == "unknown" || v == "unreachable" {
		return v
	}
	return "PostgreSQL " + v
}

// serverVersion asks a database/sql server its version with query.
func serverVersion(driverName, dsn, query string) string {
	db, err := sql.Open(driverName, dsn)
	if err != nil {
		return "unknown"
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var v string
	if err := db.QueryRowContext(ctx, query).Scan(&v); err != nil {
		return "unreachable"
	}
	return v
}
