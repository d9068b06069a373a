package mem_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/mutex"
)

// Two clients opened with one DSN share its table: they exclude each other
// as two processes on one backend would.
func Example() {
	ctx := context.Background()
	a, err := mutex.Open("mem://example")
	if err != nil {
		panic(err)
	}
	defer a.Close()
	b, err := mutex.Open("mem://example")
	if err != nil {
		panic(err)
	}
	defer b.Close()

	lease, err := a.NewMutex("nightly-report").TryLock(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("a holds it, token", lease.Token())

	_, err = b.NewMutex("nightly-report").TryLock(ctx)
	fmt.Println("b:", errors.Is(err, mutex.ErrLocked))

	if err := lease.Unlock(ctx); err != nil {
		panic(err)
	}
	lease, err = b.NewMutex("nightly-report").TryLock(ctx)
	if err != nil {
		panic(err)
	}
	defer lease.Unlock(ctx)
	fmt.Println("b holds it, token", lease.Token())
	// Output:
	// a holds it, token 1
	// b: true
	// b holds it, token 2
}

// ExampleTable_Drop shows how an application tests its own handling of a
// lost lock, without waiting for anything to expire.
func ExampleTable_Drop() {
	table := mem.NewTable()
	client := mutex.NewClient(mem.FromTable(table))
	defer client.Close()

	err := client.NewMutex("job").Do(context.Background(), func(ctx context.Context) error {
		table.Drop("job") // the fault under test
		<-ctx.Done()      // the job sees its context end
		return nil
	})
	fmt.Println("lost:", errors.Is(err, mutex.ErrLockLost))
	// Output: lost: true
}
