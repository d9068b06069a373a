// Command cron is the job every pod runs on the same schedule, of which only
// one may do the work: it takes the lock, runs the job, releases; a pod that
// finds the lock held skips.
//
// With no DSN it uses the file driver in the OS temp directory: one host,
// any number of processes, no server. Set MUTEXKIT_DRIVER and MUTEXKIT_DSN
// (for example "mem" and "", or a server's driver and DSN) to use another.
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
	"syscall"
	"time"

	_ "github.com/mutexkit/mutexkit/driver/file"
	_ "github.com/mutexkit/mutexkit/driver/mem"
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

	driverName, dsn := os.Getenv("MUTEXKIT_DRIVER"), os.Getenv("MUTEXKIT_DSN")
	if driverName == "" {
		driverName = "file"
		log.Printf("using the file driver: the lock is host-local and does not coordinate other machines")
	}
	client, err := mutex.Open(driverName, dsn)
	if err != nil {
		return err
	}
	defer client.Close()

	lease, err := client.NewMutex(key).TryLock(ctx)
	if errors.Is(err, mutex.ErrLocked) {
		fmt.Printf("pid %d: %q is already running elsewhere; skipping\n", os.Getpid(), key)
		return nil
	}
	if err != nil {
		return err
	}
	defer lease.Unlock(context.WithoutCancel(ctx))

	fmt.Printf("pid %d: running %q (fencing token %d)\n", os.Getpid(), key, lease.Token())
	select {
	case <-time.After(work): // the job
	case <-lease.Done():
		return fmt.Errorf("lock lost while the job ran: %w", lease.Err())
	case <-ctx.Done():
		return ctx.Err()
	}
	fmt.Printf("pid %d: %q done\n", os.Getpid(), key)
	return nil
}
