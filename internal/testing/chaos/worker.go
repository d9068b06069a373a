package chaos

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mutexkit/mutexkit/mutex"
)

// workerEnv carries a worker's configuration, base64 JSON, to the
// re-executed test binary.
const workerEnv = "MUTEXKIT_CHAOS_WORKER"

// WorkerConfig is what one worker process does.
type WorkerConfig struct {
	ID      int
	DSN     string
	Keys    []string
	Clients int           // mutex clients in the process, one goroutine each
	TTL     time.Duration // 0: the default
	Hold    time.Duration // length of a critical section
	Ops     int           // bound on the sections of each client
	For     time.Duration // bound on the time the worker starts new sections
	Store   string        // the fenced store's address; "" for none
	Fencing bool          // mutex.WithFencing
	// Controlled: one client, which after each Lock prints a "held" line
	// and waits for a line on stdin before it ends the section: the test
	// pauses, resumes or lets it go in between.
	Controlled bool
}

// Section is one critical section, as a worker reports it. Times are
// CLOCK_MONOTONIC nanoseconds (Now).
type Section struct {
	Client     string
	Key        string
	Token      uint64
	Call       int64 // Lock called
	Start      int64 // Lock returned: the section begins
	End        int64 // the section's work is done
	UnlockCall int64
	UnlockRet  int64
	Released   bool  // Unlock returned nil
	LostAt     int64 // when the client first saw the lease lost; 0 if never
	Writes     int   // writes to the store accepted
	Stale      int   // writes refused as stale
	// The section writes to the store at its start and at its end: when
	// the first write was answered, when the last was sent, and whether
	// the last was refused. A holder whose last write was sent after a
	// newer holder's first was answered must have been refused.
	FirstWriteRet int64
	LastWriteCall int64
	LastRefused   bool
}

// event is one line a worker prints.
type event struct {
	Kind    string   // "ready", "held", "sec", "err", "done"
	Section *Section `json:",omitempty"`
	Client  string   `json:",omitempty"`
	Key     string   `json:",omitempty"`
	Token   uint64   `json:",omitempty"`
	Msg     string   `json:",omitempty"`
}

// IsWorker reports whether this process is a worker; TestMain then calls
// WorkerMain. The test binary must import the drivers its workers' DSNs
// name.
func IsWorker() bool { return os.Getenv(workerEnv) != "" }

// WorkerMain runs the worker this process was started as, and exits.
func WorkerMain() {
	var cfg WorkerConfig
	raw, err := base64.StdEncoding.DecodeString(os.Getenv(workerEnv))
	if err == nil {
		err = json.Unmarshal(raw, &cfg)
	}
	if err == nil {
		err = runWorker(cfg)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos worker: %v\n", err)
		os.Exit(2)
	}
	os.Exit(0)
}

type emitter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (e *emitter) emit(ev event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.enc.Encode(ev)
}

func runWorker(cfg WorkerConfig) error {
	out := &emitter{enc: json.NewEncoder(os.Stdout)}
	stdin := bufio.NewReader(os.Stdin)
	var clients []*mutex.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range cfg.Clients {
		c, err := mutex.Open(cfg.DSN)
		if err != nil {
			return err
		}
		clients = append(clients, c)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err = c.Ping(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
	out.emit(event{Kind: "ready"})
	if _, err := stdin.ReadString('\n'); err != nil { // start together
		return err
	}
	deadline := time.Now().Add(cfg.For)
	var wg sync.WaitGroup
	for i, c := range clients {
		name := fmt.Sprintf("w%dc%d", cfg.ID, i)
		var store *storeClient
		if cfg.Store != "" {
			var err error
			if store, err = dialStore(cfg.Store); err != nil {
				return err
			}
		}
		wg.Go(func() { runClient(cfg, name, c, store, out, stdin, deadline) })
	}
	wg.Wait()
	out.emit(event{Kind: "done"})
	return nil
}

func runClient(cfg WorkerConfig, name string, c *mutex.Client, store *storeClient, out *emitter, stdin *bufio.Reader, deadline time.Time) {
	var opts []mutex.MutexOption
	if cfg.TTL > 0 {
		opts = append(opts, mutex.WithTTL(cfg.TTL))
	}
	if cfg.Fencing {
		opts = append(opts, mutex.WithFencing())
	}
	for op := 0; op < cfg.Ops && time.Now().Before(deadline); op++ {
		key := cfg.Keys[rand.IntN(len(cfg.Keys))]
		m := c.NewMutex(key, opts...)
		s := &Section{Client: name, Key: key, Call: Now()}
		ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(10*time.Second))
		lease, err := m.Lock(ctx)
		cancel()
		if err != nil {
			out.emit(event{Kind: "err", Client: name, Key: key, Msg: err.Error()})
			time.Sleep(50 * time.Millisecond) // the backend may be down: do not spin
			continue
		}
		s.Start, s.Token = Now(), lease.Token()
		var lostAt int64
		ended := make(chan struct{})
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			select {
			case <-lease.Done():
				if lease.Err() != nil {
					lostAt = Now()
				}
			case <-ended:
			}
		}()
		write := func() (refused bool) {
			if store == nil {
				return false
			}
			ok, err := store.write(key, s.Token)
			switch {
			case err != nil:
				out.emit(event{Kind: "err", Client: name, Key: key, Msg: "store: " + err.Error()})
			case ok:
				s.Writes++
			default:
				s.Stale++
				return true
			}
			return false
		}
		write()
		s.FirstWriteRet = Now()
		if cfg.Controlled {
			out.emit(event{Kind: "held", Client: name, Key: key, Token: s.Token})
			if _, err := stdin.ReadString('\n'); err != nil {
				return
			}
		} else {
			time.Sleep(cfg.Hold)
		}
		s.LastWriteCall = Now()
		s.LastRefused = write() // after a pause, this is the write fencing must refuse
		s.End = Now()
		close(ended)
		<-watched
		s.UnlockCall = Now()
		uctx, ucancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = lease.Unlock(uctx)
		ucancel()
		s.UnlockRet = Now()
		s.Released = err == nil
		s.LostAt = lostAt
		if errors.Is(err, mutex.ErrLockLost) && s.LostAt == 0 {
			s.LostAt = s.UnlockRet // lost unnoticed until Unlock
		}
		out.emit(event{Kind: "sec", Section: s})
	}
}

// Worker is a running worker process, seen from the test.
type Worker struct {
	Cfg   WorkerConfig
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// Events carries what the worker prints, in order; closed when it exits.
	Events chan event
	exited chan struct{}
	err    error
}

// Spawn starts a worker: this test binary, re-executed with cfg. The
// worker dies with the test (SIGKILL on parent death).
func Spawn(cfg WorkerConfig) (*Worker, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.count=1", "-test.timeout=30m")
	cmd.Env = append(os.Environ(), workerEnv+"="+base64.StdEncoding.EncodeToString(raw))
	var stderr strings.Builder
	cmd.Stderr = &limitedWriter{w: &stderr, n: 64 << 10}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &Worker{Cfg: cfg, cmd: cmd, stdin: stdin, Events: make(chan event, 1<<16), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev event
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Kind != "" {
				w.Events <- ev
			}
		}
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("worker %d: %w: %s", cfg.ID, err, lastLines(stderr.String(), 8))
		}
		w.err = err
		close(w.Events)
		close(w.exited)
	}()
	return w, nil
}

// Send writes a line to the worker's stdin.
func (w *Worker) Send(line string) error {
	_, err := io.WriteString(w.stdin, line+"\n")
	return err
}

// Signal sends sig to the worker process.
func (w *Worker) Signal(sig syscall.Signal) error { return w.cmd.Process.Signal(sig) }

// Kill ends the worker, continuing it first if stopped, and waits.
func (w *Worker) Kill() {
	w.cmd.Process.Signal(syscall.SIGCONT)
	w.cmd.Process.Kill()
	<-w.exited
}

// Wait waits for the worker to exit and returns its error.
func (w *Worker) Wait() error {
	<-w.exited
	return w.err
}

type limitedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
	n  int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w.Len() < l.n {
		l.w.Write(p)
	}
	return len(p), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
