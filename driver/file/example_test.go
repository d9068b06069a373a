//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mutexkit/mutexkit/driver/file"
	"github.com/mutexkit/mutexkit/mutex"
)

// Two clients on one directory exclude each other, as two processes would.
func Example() {
	dir, err := os.MkdirTemp("", "mutexkit-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	a, err := mutex.Open("file://" + filepath.ToSlash(dir))
	if err != nil {
		panic(err)
	}
	defer a.Close()
	b, err := mutex.Open("file://" + filepath.ToSlash(dir))
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

// A lock file removed behind its holder's back no longer excludes anyone:
// the lease ends lost (at once on Linux, else at the client's next
// heartbeat), and its Do's context is cancelled.
func Example_lost() {
	dir, err := os.MkdirTemp("", "mutexkit-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	client := mutex.NewClient(file.FromDir(dir))
	defer client.Close()

	err = client.NewMutex("job").TryDo(context.Background(), func(ctx context.Context) error {
		os.Remove(filepath.Join(dir, file.FileName("job"))) // the fault
		<-ctx.Done()
		return nil
	})
	fmt.Println("lost:", errors.Is(err, mutex.ErrLockLost))
	// Output: lost: true
}

func ExampleFileName() {
	fmt.Println(file.FileName("nightly-report"))
	fmt.Println(file.FileName("../../etc/passwd"))
	// Output:
	// nightly-report-6743ba10a2b2c4879cf6af5c75140be7.lock
	// etc_passwd-3754d6cb3a38e1185e5b382d5f3ef3f1.lock
}
