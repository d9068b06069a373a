// Command cron is the job every pod runs on the same schedule, of which only
// one may do the work: it takes the lock, runs the job, releases; a pod that
// finds the lock held skips.
//
// With no DSN it uses the file driver in the OS temp directory: one host,
// any number of processes, no server. Set MUTEXKIT_DSN (postgres://...,
// redis://..., file:///dir) to use another backend.
//
//	go run ./examples/cron                      # runs the job
//	go run ./examples/cron & go run ./examples/cron   # one runs, one skips
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	_ "github.com/mutexkit/mutexkit/driver/file"
	_ "github.com/mutexkit/mutexkit/driver/postgres"
	_ "github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

func main() {
	key := flag.String("key", "nightly-report", "lock key: one per job")
	work := flag.Duration("work", 2*time.Second, "how long the job runs")
	flag.Parse()
	log.SetFlags(0)

	if err := run(*key, *work); err != nil {
		log.Fatal(err)
	}
}

func run(key string, work time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dsn := os.Getenv("MUTEXKIT_DSN")
	if dsn == "" {
		dsn = "file:" // the default lock directory
	}
	if strings.HasPrefix(dsn, "file:") {
		log.Printf("using the file driver: the lock is host-local and does not coordinate other machines")
	}
	client, err := mutex.Open(dsn)
	if err != nil {
		return err
	}
	defer client.Close() // after TryDo returned: it has unlocked already

	// TryDo, not Do: Do would wait, and every pod would run the job in turn.
	// (A long-lived service would add mutex.WithMinHold, so that pods whose
	// timers fire a little late skip too; this process ends with the job,
	// and Close releases the lock, so it would not help here: mutexkit run
	// --min-hold waits instead.)
	err = client.NewMutex(key).TryDo(ctx, func(ctx context.Context) error {
		return job(ctx, key, work)
	})
	if errors.Is(err, mutex.ErrLocked) {
		fmt.Printf("pid %d: %q is already running elsewhere; skipping\n", os.Getpid(), key)
		return nil
	}
	return err
}

// job is the work. Its ctx ends if the lock is lost (then context.Cause
// matches mutex.ErrLockLost) or on SIGINT/SIGTERM.
func job(ctx context.Context, key string, work time.Duration) error {
	fmt.Printf("pid %d: running %q\n", os.Getpid(), key)
	select {
	case <-time.After(work):
	case <-ctx.Done():
		return fmt.Errorf("job stopped: %w", context.Cause(ctx))
	}
	fmt.Printf("pid %d: %q done\n", os.Getpid(), key)
	return nil
}
