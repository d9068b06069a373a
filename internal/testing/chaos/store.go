package chaos

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Store is the resource a lock guards, with fencing: a loopback TCP server
// that keeps the newest token it has seen per key and refuses a write with
// an older one. A token of 0 (a driver that does not fence) is always
// accepted: nothing can be checked.
//
// Protocol, one line each way: "W <token> <key>" answers "OK" or "STALE".
type Store struct {
	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	newest   map[string]uint64
	accepted int
	rejected int
}

// NewStore starts a store on a free loopback port.
func NewStore() (*Store, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Store{ln: ln, newest: map[string]uint64{}}
	s.wg.Go(s.serve)
	return s, nil
}

// Addr is the store's address, for workers.
func (s *Store) Addr() string { return s.ln.Addr().String() }

// Counts returns the writes accepted and refused as stale.
func (s *Store) Counts() (accepted, rejected int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted, s.rejected
}

// Close stops the store.
func (s *Store) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Store) serve() {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		conns.Go(func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				reply := s.write(strings.TrimSpace(line))
				if _, err := c.Write([]byte(reply + "\n")); err != nil {
					return
				}
			}
		})
	}
}

func (s *Store) write(line string) string {
	f := strings.SplitN(line, " ", 3)
	if len(f) != 3 || f[0] != "W" {
		return "ERR bad request"
	}
	token, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return "ERR bad token"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if token != 0 && token < s.newest[f[2]] {
		s.rejected++
		return "STALE"
	}
	if token > s.newest[f[2]] {
		s.newest[f[2]] = token
	}
	s.accepted++
	return "OK"
}

// storeClient is a worker's connection to the Store.
type storeClient struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

func dialStore(addr string) (*storeClient, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &storeClient{conn: c, r: bufio.NewReader(c)}, nil
}

// write reports whether the store accepted the write.
func (c *storeClient) write(key string, token uint64) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c.conn, "W %d %s\n", token, key); err != nil {
		return false, err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return false, err
	}
	switch strings.TrimSpace(line) {
	case "OK":
		return true, nil
	case "STALE":
		return false, nil
	}
	return false, fmt.Errorf("store: %s", strings.TrimSpace(line))
}
