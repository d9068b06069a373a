package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// commandMeter counts the commands clients send a set of Redis servers
// between mark(start) and mark(end), summed over the servers, and apart
// from them those their scripts ran. It reads each server's MONITOR
// stream: INFO commandstats cannot tell a command a client sent from one
// a script ran (both count as "set" or "publish"), and MONITOR can
// ("[0 lua]"). The meter's own markers (ECHO) are not counted. Its cost is the server formatting each command for it and
// this process reading the lines: small next to a command, but not nil.
type commandMeter struct {
	nodes []*monitoredNode
}

type monitoredNode struct {
	mon, admin net.Conn
	adminR     *bufio.Reader
	done       chan struct{} // closed when the reader saw the end marker or failed
	mu         sync.Mutex
	count      int64 // sent by clients
	scripted   int64 // run by scripts
	upkeep     int64 // of count, what clients send by the clock, not per handoff (isUpkeep)
	err        error
}

const (
	meterStart = "mutexkit-bench-start"
	meterEnd   = "mutexkit-bench-end"
)

// monitorCommands starts a meter on the servers at addrs; start and end
// it with mark.
func monitorCommands(b testing.TB, addrs []string) *commandMeter {
	b.Helper()
	m := &commandMeter{}
	for _, addr := range addrs {
		n := &monitoredNode{done: make(chan struct{})}
		var err error
		if n.mon, err = net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
			n.admin, err = net.DialTimeout("tcp", addr, 5*time.Second)
		}
		if err != nil {
			b.Fatalf("monitor %s: %v", addr, err)
		}
		b.Cleanup(func() { n.mon.Close(); n.admin.Close() })
		n.adminR = bufio.NewReader(n.admin)
		r := bufio.NewReaderSize(n.mon, 1<<16)
		n.mon.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := n.mon.Write([]byte("MONITOR\r\n")); err != nil {
			b.Fatalf("monitor %s: %v", addr, err)
		}
		if line, err := r.ReadString('\n'); err != nil || line != "+OK\r\n" {
			b.Fatalf("monitor %s: %q, %v", addr, line, err)
		}
		n.mon.SetDeadline(time.Time{})
		go n.read(r)
		m.nodes = append(m.nodes, n)
	}
	return m
}

// read counts the lines between the markers that are not a script's.
func (n *monitoredNode) read(r *bufio.Reader) {
	defer close(n.done)
	started := false
	for {
		line, err := r.ReadSlice('\n')
		long := err == bufio.ErrBufferFull // an EVAL with its script: the rest is read below
		if err != nil && !long {
			n.mu.Lock()
			n.err = fmt.Errorf("MONITOR stream: %w", err)
			n.mu.Unlock()
			return
		}
		// +1764000000.123456 [0 127.0.0.1:5555] "echo" "..."; a script's: [0 lua]
		_, rest, _ := bytes.Cut(line, []byte(" ["))
		who, args, _ := bytes.Cut(rest, []byte("] "))
		switch {
		case bytes.Contains(args, []byte(meterStart)):
			started = true
		case bytes.Contains(args, []byte(meterEnd)):
			n.mon.Close() // or the server keeps what it would send us
			return
		case started && bytes.HasSuffix(who, []byte(" lua")):
			n.add(0, 1, 0)
		case started && isUpkeep(args):
			n.add(1, 0, 1)
		case started:
			n.add(1, 0, 0)
		}
		for long {
			_, err = r.ReadSlice('\n')
			long = err == bufio.ErrBufferFull
		}
	}
}

func (n *monitoredNode) add(sent, scripted, upkeep int64) {
	n.mu.Lock()
	n.count += sent
	n.scripted += scripted
	n.upkeep += upkeep
	n.mu.Unlock()
}

// isUpkeep reports a MONITOR line's command ("PING" ...) as one a client
// sends by the clock rather than per handoff: a subscription's PING, every
// 5 s per client. (A list waiter's refresh of its place, every 1 to 2 s,
// is a script like others; in this benchmark no wait lasts a second.)
func isUpkeep(args []byte) bool {
	name, _, _ := bytes.Cut(args, []byte(" "))
	return bytes.EqualFold(name, []byte(`"ping"`))
}

// mark sends the start or end marker to every server, in order. It may
// be called from any goroutine: a failure is reported with b.Error.
func (m *commandMeter) mark(b testing.TB, what string) {
	for _, n := range m.nodes {
		n.admin.SetDeadline(time.Now().Add(5 * time.Second))
		cmd := "*2\r\n$4\r\nECHO\r\n$" + strconv.Itoa(len(what)) + "\r\n" + what + "\r\n"
		_, err := n.admin.Write([]byte(cmd))
		for i := 0; i < 2 && err == nil; i++ { // $len, then the text
			_, err = n.adminR.ReadString('\n')
		}
		if err != nil {
			b.Errorf("meter mark: %v", err)
			return
		}
	}
}

// total waits for every reader to see the end marker and returns the
// commands counted, summed over the servers: sent by the clients, run by
// scripts, and of those sent, the upkeep (isUpkeep).
func (m *commandMeter) total(b testing.TB) (sent, scripted, upkeep int64) {
	for _, n := range m.nodes {
		select {
		case <-n.done:
		case <-time.After(30 * time.Second):
			b.Fatal("MONITOR stream: no end marker in 30 s")
		}
		n.mu.Lock()
		sent += n.count
		scripted += n.scripted
		upkeep += n.upkeep
		err := n.err
		n.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
	}
	return sent, scripted, upkeep
}
