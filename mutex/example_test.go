package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	_ "github.com/mutexkit/mutexkit/driver/mem" // registers "mem"
	"github.com/mutexkit/mutexkit/mutex"
)

// The cron job inside every pod: whichever pod takes the lock runs it, the
// others skip.
func Example() {
	ctx := context.Background()
	client, err := mutex.Open("mem://example") // in production: "postgres" or "redlock" with a DSN
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	lease, err := client.NewMutex("nightly-report").TryLock(ctx)
	if errors.Is(err, mutex.ErrLocked) {
		fmt.Println("already running in another pod")
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Unlock(ctx)
	fmt.Println("running the nightly report")
	// Output: running the nightly report
}

// Two clients of one backend, as two pods would have: the second finds the
// key held.
func ExampleMutex_TryLock() {
	ctx := context.Background()
	podA, _ := mutex.Open("mem://example-trylock")
	podB, _ := mutex.Open("mem://example-trylock")
	defer podA.Close()
	defer podB.Close()

	lease, err := podA.NewMutex("migration").TryLock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_, err = podB.NewMutex("migration").TryLock(ctx)
	fmt.Println("pod B:", errors.Is(err, mutex.ErrLocked))

	lease.Unlock(ctx)
	leaseB, err := podB.NewMutex("migration").TryLock(ctx)
	fmt.Println("pod B after A unlocked:", err)
	leaseB.Unlock(ctx)
	// Output:
	// pod B: true
	// pod B after A unlocked: <nil>
}

// The cron job in every replica: each fires at 02:00, one runs the report,
// the others skip. WithMinHold keeps the lock five minutes, so a replica
// whose timer fires a little late, after the job ended, skips too.
func ExampleMutex_TryDo() {
	client, _ := mutex.Open("mem://example-trydo")
	defer client.Close()
	report := client.NewMutex("nightly-report", mutex.WithMinHold(5*time.Minute))

	err := report.TryDo(context.Background(), func(ctx context.Context) error {
		fmt.Println("running the nightly report")
		return nil // stop when ctx ends: the lease was lost or the client closed
	})
	fmt.Println("first replica:", err)
	err = report.TryDo(context.Background(), func(ctx context.Context) error {
		fmt.Println("running it again") // not reached
		return nil
	})
	fmt.Println("second replica skips:", errors.Is(err, mutex.ErrLocked))
	// Output:
	// running the nightly report
	// first replica: <nil>
	// second replica skips: true
}

// Do waits for the lock, holds it while fn runs, and cancels fn's context
// if the lease is lost. Every caller runs fn in turn: for run-once-or-skip
// work, such as a cron job, use TryDo.
func ExampleMutex_Do() {
	client, _ := mutex.Open("mem://example-do")
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // how long to wait for the lock
	defer cancel()
	err := client.NewMutex("leader-loop", mutex.WithTTL(10*time.Second)).Do(ctx, func(ctx context.Context) error {
		fmt.Println("leading")
		return nil // or return ctx's cause when it ends: mutex.ErrLockLost
	})
	fmt.Println("err:", err)
	// Output:
	// leading
	// err: <nil>
}

// Fencing tokens let the guarded resource refuse a holder that lost its
// lease without knowing it.
func ExampleLease_Token() {
	ctx := context.Background()
	client, _ := mutex.Open("mem://example-token")
	defer client.Close()
	m := client.NewMutex("ledger", mutex.WithFencing())
	for range 3 {
		lease, err := m.Lock(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("token", lease.Token()) // send it with every write; the store keeps the highest seen
		lease.Unlock(ctx)
	}
	// Output:
	// token 1
	// token 2
	// token 3
}

// Watch Done, or Err, to stop work when the lease is lost.
func ExampleLease_Done() {
	ctx := context.Background()
	client, _ := mutex.Open("mem://example-done")
	defer client.Close()
	lease, err := client.NewMutex("worker").Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	go lease.Unlock(ctx) // elsewhere, the work ends
	<-lease.Done()
	fmt.Println("lease ended; lost:", errors.Is(lease.Err(), mutex.ErrLockLost))
	// Output: lease ended; lost: false
}
