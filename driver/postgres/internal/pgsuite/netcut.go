package pgsuite

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/internal/testing/testserver"
)

// Keepalive of the holder's lock sessions in ClusterNetworkCutFreesLocks.
const (
	netcutIdle     = time.Second
	netcutInterval = time.Second
	netcutCount    = 3
)

// netcutNet is a network namespace joined to the host by a veth pair with
// a /30 of 10.200.0.0/16 that exists only on that pair: Host is the
// address on the host's end, Peer the one inside the namespace.
type netcutNet struct {
	NS, HostDev, PeerDev string
	Host, Peer, Subnet   string

	ip func(args ...string) error
}

// newNetcutNet makes the namespace and the veth pair, removed when t ends.
// It skips t, even under MUTEXKIT_REQUIRE_SERVICES=1, where namespaces
// cannot be made: that is a capability of the machine (root, or
// CAP_NET_ADMIN and CAP_SYS_ADMIN, and iproute2), not a service to start.
func newNetcutNet(t *testing.T) *netcutNet {
	t.Helper()
	const why = "; this is a capability of the environment, not a service, so the test skips even with MUTEXKIT_REQUIRE_SERVICES=1"
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("needs iproute2's ip to make a network namespace (apt-get install -y iproute2)" + why)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to make a network namespace and a veth pair" + why)
	}
	ip := func(args ...string) error {
		out, err := exec.Command(ipPath, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	// A /30 of 10.200.0.0/16 that nothing on the host uses yet.
	addrs, _ := exec.Command(ipPath, "-o", "-4", "addr").CombinedOutput()
	routes, _ := exec.Command(ipPath, "-4", "route", "show", "table", "all").CombinedOutput()
	third := -1
	for i := range 250 {
		n := (os.Getpid()+i)%250 + 1
		p := fmt.Sprintf("10.200.%d.", n)
		if !strings.Contains(string(addrs), p) && !strings.Contains(string(routes), p) {
			third = n
			break
		}
	}
	if third < 0 {
		t.Skip("no free /30 in 10.200.0.0/16 for the test's veth pair")
	}
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	n := &netcutNet{
		NS: "mk-netcut-" + id, HostDev: "mkh" + id, PeerDev: "mkp" + id,
		Host: fmt.Sprintf("10.200.%d.1", third), Peer: fmt.Sprintf("10.200.%d.2", third),
		Subnet: fmt.Sprintf("10.200.%d.0/30", third),
	}
	if err := ip("netns", "add", n.NS); err != nil {
		t.Skipf("cannot make a network namespace (%v)%s", err, why)
	}
	// The blackhole is a fallback, so that traffic for the subnet never
	// takes the default route, whatever happens to the veth pair.
	t.Cleanup(func() {
		ip("link", "del", n.HostDev) // takes the peer with it
		ip("netns", "del", n.NS)
		ip("route", "del", "blackhole", n.Subnet, "metric", "4000")
	})
	if err := ip("route", "add", "blackhole", n.Subnet, "metric", "4000"); err != nil {
		t.Skipf("cannot add a route (%v)%s", err, why)
	}
	if err := ip("link", "add", n.HostDev, "type", "veth", "peer", "name", n.PeerDev); err != nil {
		t.Skipf("cannot make a veth pair (%v)%s", err, why)
	}
	for _, args := range [][]string{
		{"link", "set", n.PeerDev, "netns", n.NS},
		{"addr", "add", n.Host + "/30", "dev", n.HostDev},
		{"link", "set", n.HostDev, "up"},
		{"netns", "exec", n.NS, "ip", "addr", "add", n.Peer + "/30", "dev", n.PeerDev},
		{"netns", "exec", n.NS, "ip", "link", "set", n.PeerDev, "up"},
	} {
		if err := ip(args...); err != nil {
			t.Skipf("cannot set up the veth pair (%v)%s", err, why)
		}
	}
	n.ip = ip
	return n
}

// ClusterNetworkCutFreesLocks: a client cut off by the network, with no
// clean close, loses its locks on the server within the bound its TCP
// keepalive sets (issue 3). The holder (HelperProcess, role "netcut") runs
// in a network namespace and reaches a private cluster over a veth pair,
// with a keepalive of 1 s idle, 1 s interval, 3 probes (WithKeepalive,
// which the driver sets on the server side of each lock session); once it
// holds the key, its end of the pair goes down (no FIN or RST can reach
// the server) and the process is stopped (it cannot close anything
// either). The key must come free on the server within idle + interval x
// count + 15 s of the cut, and not at once. The holder's client is the one
// the test binary's TestHelperProcess passes, so c goes unused.
func ClusterNetworkCutFreesLocks(t *testing.T, c Client) {
	if testing.Short() {
		t.Skip("makes a network namespace and spawns a process")
	}
	n := newNetcutNet(t)
	pg := testserver.StartPGCluster(t, testserver.PGClusterOptions{Settings: map[string]string{
		"listen_addresses": "127.0.0.1," + n.Host,
	}})
	// Let the namespace's address in (trust, as for loopback).
	hba := filepath.Join(pg.DataDir, "pg_hba.conf")
	f, err := os.OpenFile(hba, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "host all all %s/32 trust\n", n.Peer)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	db := pg.AdminDB() // over the unix socket: untouched by the cut
	t.Cleanup(func() { db.Close() })
	if _, err := db.ExecContext(ctx, `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the postmaster rereads pg_hba.conf on SIGHUP

	ns := Namespace(t)
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.NS, os.Args[0]}, helperArgs...)...)
	cmd.Env = append(os.Environ(), helperEnv+"=netcut", "MUTEXKIT_PG_DSN="+pg.DSN(n.Host, nil), "MUTEXKIT_PG_NS="+ns)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// ip netns exec execs the test binary in place: the pid is the holder's.
	t.Cleanup(func() {
		cmd.Process.Kill() // also ends a stopped process
		cmd.Wait()
	})
	held := make(chan error, 1)
	go func() {
		r := bufio.NewReader(stdout)
		for {
			line, err := r.ReadString('\n')
			if strings.TrimSpace(line) == "held" {
				held <- nil
				break
			}
			if err != nil {
				held <- fmt.Errorf("the holder exited before taking the key: %v", err)
				return
			}
		}
		r.WriteTo(os.Stderr)
	}()
	select {
	case err := <-held:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the holder did not take the key within 60s")
	}

	id := postgres.KeyID(ns, "netcut")
	classid, objid := postgres.LockTag(id)
	var holderPID int
	var clientAddr string
	if err := db.QueryRowContext(ctx, `SELECT a.pid, host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.classid = $1 AND l.objid = $2`,
		int64(classid), int64(objid)).Scan(&holderPID, &clientAddr); err != nil {
		t.Fatalf("the key is not held on the server: %v", err)
	}
	if clientAddr != n.Peer {
		t.Fatalf("the key is held by a session from %q, want the namespace's %s", clientAddr, n.Peer)
	}
	probe, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	tryLock := func() bool {
		t.Helper()
		var ok bool
		if err := probe.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, id).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if tryLock() {
		t.Fatal("pg_try_advisory_lock took the key before the cut")
	}

	// The cut: the namespace's end goes down, so nothing the holder's host
	// does reaches the server, and the holder stops.
	if err := n.ip("netns", "exec", n.NS, "ip", "link", "set", n.PeerDev, "down"); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	keepalive := netcutIdle + netcutInterval*netcutCount
	bound := keepalive + 15*time.Second
	for !tryLock() {
		if time.Since(cut) > bound {
			t.Fatalf("the key is still held %v after the cut; want it freed within %v (keepalive %v + 15s)",
				time.Since(cut).Round(time.Millisecond), bound, keepalive)
		}
		time.Sleep(50 * time.Millisecond)
	}
	freed := time.Since(cut)
	if _, err := probe.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, id); err != nil {
		t.Fatal(err)
	}
	if freed < netcutIdle {
		t.Fatalf("the key came free %v after the cut, before any keepalive probe could fail: the connection was closed, not cut", freed)
	}
	var gone bool
	if err := db.QueryRowContext(ctx, `SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)`, holderPID).Scan(&gone); err != nil {
		t.Fatal(err)
	}
	if !gone {
		t.Fatalf("the key is free but the holder's backend %d is still there", holderPID)
	}
	t.Logf("the key came free %v after the cut (keepalive %v, bound %v)", freed.Round(time.Millisecond), keepalive, bound)
}
