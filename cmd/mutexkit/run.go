package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/mutexkit/mutexkit/driver/file"
	"github.com/mutexkit/mutexkit/mutex"
)

const runUsage = `Usage: mutexkit run --key KEY [flags] -- program [args...]

Takes the lock KEY, runs program with this command's stdin, stdout and
stderr, and releases the lock when it exits. The program's exit code is
this command's. SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed on to it,
and it never outlives this command: if mutexkit is killed, even with
SIGKILL, the program is killed too.

If the lock is held elsewhere the job is skipped: one line on stderr and
exit code 75 (--skip-code), also when --wait runs out with the lock still
held. A backend that cannot be reached is not a skip: exit code 69, also
when --wait runs out while it is unreachable; one that refuses the
credentials or database: 78, at once. If the lock is lost while the program runs
(its session died, renewals failed), the program gets SIGTERM, then SIGKILL
after --grace, and the exit code is 76 (--lost-code). On backends whose
locks expire, this starts early enough that the program is gone before the
lock could pass to another holder.

With --min-hold the lock stays held after the program ends until the
minimum has passed, and so mutexkit keeps running, holding it: the pod or
container that runs it stays up that long (a process that exits cannot
keep a lock). SIGTERM ends that wait and releases the lock at once.

Examples:
  # cron in every pod: one pod runs the report, the others skip
  MUTEXKIT_DSN=postgres://app@db/app mutexkit run --key nightly-report -- ./report

  # wait up to ten minutes for the lock, then run; keep it at least 5 minutes
  mutexkit run --key migrate --wait 10m --min-hold 5m --dsn redis://redis:6379 -- ./migrate up

  # no DSN: a lock file on this host only
  mutexkit run --key backup -- tar czf /backup/home.tgz /home

Flags:
`

// runConfig is what the run flags say.
type runConfig struct {
	key, dsn           string
	wait, ttl, minHold time.Duration
	grace, heartbeat   time.Duration
	skipCode, lostCode int
	program            []string
}

// parseRun parses the run flags. done is true when the command should
// exit with code (help given, or a usage mistake reported).
func parseRun(args []string, stdout, stderr io.Writer) (c runConfig, code int, done bool) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&c.key, "key", "", "lock key: one per job (required)")
	fs.StringVar(&c.dsn, "dsn", "", "lock backend DSN (default $MUTEXKIT_DSN; none: the file driver, this host only)")
	fs.DurationVar(&c.wait, "wait", 0, "how long to wait for the lock; 0 skips at once if it is held (the cron default)")
	fs.DurationVar(&c.ttl, "ttl", 0, fmt.Sprintf("lease length on backends whose locks expire (default %v); renewed while the program runs", mutex.DefaultTTL))
	fs.DurationVar(&c.minHold, "min-hold", 0, fmt.Sprintf("keep the lock at least this long from acquisition (at most %v), even if the program ends sooner, so pods whose schedule fires a little later skip; mutexkit keeps running until then", fmtDuration(mutex.MaxMinHold)))
	fs.DurationVar(&c.grace, "grace", 5*time.Second, "after SIGTERM to a program whose lock was lost, wait this long before SIGKILL; where locks expire, the TTL must be at least 3 times --grace and at least --grace plus 2s")
	fs.DurationVar(&c.heartbeat, "heartbeat", mutex.DefaultHeartbeat, fmt.Sprintf("on backends whose locks last as long as a session (PostgreSQL, file), how often the session is verified: a loss is seen within about this long (%v to %v)", mutex.MinHeartbeat, mutex.MaxHeartbeat))
	fs.IntVar(&c.skipCode, "skip-code", exitSkipped, "exit code when the lock is held elsewhere")
	fs.IntVar(&c.lostCode, "lost-code", exitLost, "exit code when the lock was lost while the program ran")
	if code, done := parseFlags(fs, runUsage, args, stdout, stderr); done {
		return c, code, true
	}
	c.program = fs.Args()
	var err error
	switch {
	case c.key == "":
		err = errors.New("--key is required")
	case len(c.program) == 0:
		err = errors.New("no program to run: put it after --, as in mutexkit run --key K -- program args")
	case c.wait < 0 || c.minHold < 0 || c.grace < 0:
		err = errors.New("--wait, --min-hold and --grace cannot be negative")
	case c.heartbeat < mutex.MinHeartbeat || c.heartbeat > mutex.MaxHeartbeat:
		err = fmt.Errorf("--heartbeat %v is outside [%v, %v]", c.heartbeat, mutex.MinHeartbeat, mutex.MaxHeartbeat)
	case c.minHold > mutex.MaxMinHold:
		err = fmt.Errorf("--min-hold %v is longer than %v, the most the library holds a lock for a job that has ended", fmtDuration(c.minHold), fmtDuration(mutex.MaxMinHold))
	}
	if err != nil {
		return c, usageFail(stderr, "run", err), true
	}
	return c, 0, false
}

// checkGrace says whether --grace fits in the lease, on a backend whose
// locks expire. Renewals keep at least two thirds of a lease ahead, less
// the loss margin, and the program is stopped when less than --grace is
// left: a longer --grace would stop every program at once. Whether locks
// expire is the backend's to say (PostgreSQL's and the file driver's do
// not), and a lease says it, so the check comes once the lock is taken.
func checkGrace(c runConfig) error {
	ttl, which := c.ttl, "--ttl"
	if ttl == 0 {
		ttl, which = mutex.DefaultTTL, "the default --ttl"
	}
	if ttl >= 3*c.grace && ttl >= c.grace+2*time.Second {
		return nil
	}
	return fmt.Errorf("--grace %v does not fit in %s %v: this backend's locks expire, and the program must be stopped before its lease could lapse, so the TTL must be both at least 3 times --grace (%v) and at least --grace plus 2s (%v); lower --grace or raise --ttl",
		c.grace, which, ttl, 3*c.grace, c.grace+2*time.Second)
}

func runCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, code, done := parseRun(args, stdout, stderr)
	if done {
		return code
	}
	be, err := resolveBackend(cfg.dsn)
	if err != nil {
		return fail(stderr, exitUsage, err)
	}
	if be.fallback {
		fmt.Fprintf(stderr, "mutexkit: no DSN (--dsn or MUTEXKIT_DSN): using the file driver in %s; the lock is host-local and does not coordinate other machines\n", file.DefaultDir())
	}
	client, err := mutex.Open(be.dsn, mutex.WithHeartbeat(cfg.heartbeat))
	if err != nil {
		return fail(stderr, exitUsage, err)
	}
	defer client.Close()

	// Signals: while waiting for the lock they end the wait; while the
	// program runs they are passed on to it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	lease, code, ok := acquire(client, cfg, sigs, stderr)
	if !ok {
		return code
	}
	if !lease.Expires().IsZero() {
		if err := checkGrace(cfg); err != nil {
			unlock(lease)
			return usageFail(stderr, "run", err)
		}
	}
	return runUnderLease(lease, cfg, sigs, stdin, stdout, stderr)
}

// acquire takes the lock, waiting up to cfg.wait. ok is false when the
// command should exit with code.
func acquire(client *mutex.Client, cfg runConfig, sigs <-chan os.Signal, stderr io.Writer) (lease *mutex.Lease, code int, ok bool) {
	var opts []mutex.MutexOption
	if cfg.ttl > 0 {
		opts = append(opts, mutex.WithTTL(cfg.ttl))
	}
	m := client.NewMutex(cfg.key, opts...)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var interrupted os.Signal
	stopWatching := make(chan struct{})
	defer close(stopWatching)
	go func() {
		select {
		case interrupted = <-sigs:
			cancel(fmt.Errorf("interrupted by %v", interrupted))
		case <-stopWatching:
		}
	}()

	var err error
	if cfg.wait == 0 {
		// The drivers bound each call; this bounds the whole attempt (a
		// first connect, a retry) should one of them not.
		tctx, tcancel := context.WithTimeout(ctx, tryLockTimeout)
		lease, err = m.TryLock(tctx)
		tcancel()
	} else {
		wctx, wcancel := context.WithTimeout(ctx, cfg.wait)
		lease, err = m.Lock(wctx)
		wcancel()
	}
	// A wait that ran out keeps the last attempt's outcome: only a key
	// still held is a skip; an outage is not (a cron job that waits would
	// otherwise skip quietly every night while the backend is down).
	timedOut := cfg.wait > 0 && errors.Is(err, context.DeadlineExceeded)
	switch {
	case err == nil:
		return lease, 0, true
	case context.Cause(ctx) != nil && errors.Is(err, context.Canceled):
		fmt.Fprintf(stderr, "mutexkit: %v while waiting for lock %q\n", context.Cause(ctx), cfg.key)
		if s, ok := interrupted.(syscall.Signal); ok {
			return nil, 128 + int(s), false
		}
		return nil, exitUnavailable, false
	case errors.Is(err, mutex.ErrDenied):
		return nil, fail(stderr, exitDenied, err), false
	case errors.Is(err, mutex.ErrUnavailable) && timedOut:
		return nil, fail(stderr, exitUnavailable, fmt.Errorf("the lock backend was unreachable when --wait %v ran out: %w", cfg.wait, err)), false
	case errors.Is(err, mutex.ErrLocked):
		fmt.Fprintf(stderr, "mutexkit: lock %q is held elsewhere; skipping\n", cfg.key)
		return nil, cfg.skipCode, false
	case timedOut: // no attempt was answered
		return nil, fail(stderr, exitUnavailable, fmt.Errorf("no answer from the lock backend within --wait %v: %w", cfg.wait, err)), false
	}
	return nil, fail(stderr, backendCode(err), err), false
}

// runUnderLease runs the program while lease is held and returns the exit
// code.
func runUnderLease(lease *mutex.Lease, cfg runConfig, sigs <-chan os.Signal, stdin io.Reader, stdout, stderr io.Writer) int {
	acquired := time.Now()
	cmd := exec.Command(cfg.program[0], cfg.program[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	ownGroup := !isTerminal(stdin)
	cmd.SysProcAttr = sysProcAttr(ownGroup)

	started, exited := make(chan error, 1), make(chan error, 1)
	go func() {
		// The parent-death signal fires when the thread that forked the
		// program exits, not the process: keep this goroutine on its
		// thread until the program is gone.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		unlock(lease)
		fmt.Fprintf(stderr, "mutexkit: start %s: %v\n", cfg.program[0], err)
		return 127
	}

	risk := time.NewTicker(100 * time.Millisecond) // lease health, on backends whose locks expire
	defer risk.Stop()
	var lost error
	var killTimer <-chan time.Time
	stop := func(why error) {
		if lost != nil {
			return
		}
		lost = why
		fmt.Fprintf(stderr, "mutexkit: %v; stopping the program (SIGTERM, SIGKILL after %v)\n", why, cfg.grace)
		signalProgram(cmd, ownGroup, syscall.SIGTERM)
		killTimer = time.After(cfg.grace)
	}
	var waitErr error
loop:
	for {
		select {
		case waitErr = <-exited:
			break loop
		case sig := <-sigs:
			if ownGroup || (sig != syscall.SIGINT && sig != syscall.SIGQUIT) { // a terminal sends those to the program itself
				signalProgram(cmd, ownGroup, sig.(syscall.Signal))
			}
		case <-lease.Done():
			stop(fmt.Errorf("lock %q lost while the program ran: %v", cfg.key, lease.Err()))
		case <-risk.C:
			// Stop the program before the lease could lapse, not after:
			// SIGTERM when less than the grace period is left before the
			// lease counts as lost, so SIGKILL comes by then at the latest
			// (and the lease lapses on the server later still).
			if exp := lease.Expires(); !exp.IsZero() && time.Until(exp) < cfg.grace+100*time.Millisecond {
				stop(fmt.Errorf("lock %q is about to lapse: renewals are failing", cfg.key))
			}
		case <-killTimer:
			signalProgram(cmd, ownGroup, syscall.SIGKILL)
		}
	}
	code := exitCode(cmd, waitErr)
	if lost != nil {
		unlock(lease)
		return cfg.lostCode
	}

	// WithMinHold by waiting here: the lease stays held, and renewed, until
	// the minimum has passed.
	if rest := cfg.minHold - time.Since(acquired); rest > 0 {
		select {
		case <-time.After(rest):
		case <-lease.Done():
		case <-sigs:
		}
	}
	if err := unlock(lease); errors.Is(err, mutex.ErrLockLost) {
		fmt.Fprintf(stderr, "mutexkit: lock %q was lost before the program ended: %v\n", cfg.key, oneLine(err))
		return cfg.lostCode
	} else if err != nil {
		fmt.Fprintf(stderr, "mutexkit: release lock %q: %v\n", cfg.key, oneLine(err))
	}
	return code
}

// fmtDuration prints whole hours as "24h", not "24h0m0s".
func fmtDuration(d time.Duration) string {
	if d > 0 && d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return d.String()
}

// exitCode is the program's exit code, or 128+N if signal N killed it.
func exitCode(cmd *exec.Cmd, err error) int {
	if cmd.ProcessState == nil {
		return exitUnavailable
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// signalProgram sends sig to the program, and to its whole process group
// when it has one of its own (so a shell script's children get it too).
func signalProgram(cmd *exec.Cmd, ownGroup bool, sig syscall.Signal) {
	if ownGroup {
		syscall.Kill(-cmd.Process.Pid, sig)
		return
	}
	cmd.Process.Signal(sig)
}

// isTerminal reports whether r is a terminal. A program started from one
// stays in the terminal's process group, so that it can read from it.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// tryLockTimeout bounds run's one attempt when --wait is 0; running out is
// an outage (exit 69), never a skip.
const tryLockTimeout = 30 * time.Second

// unlock releases the lease within a bounded time: the command must end
// even if the backend stopped answering (it then frees the lock at TTL or
// session end).
func unlock(lease *mutex.Lease) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return lease.Unlock(ctx)
}
