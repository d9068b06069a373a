//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
)

// The driver used directly, as package mutex uses it: two Lockers on one
// directory exclude each other as two processes would.
func Example() {
	dir, err := os.MkdirTemp("", "mutexkit-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	conn := file.FromDir(dir)
	a, err := conn.Connect(ctx)
	if err != nil {
		panic(err)
	}
	defer a.Close()
	b, err := conn.Connect(ctx)
	if err != nil {
		panic(err)
	}
	defer b.Close()

	owner := driver.NewOwner()
	grant, err := a.Acquire(ctx, driver.AcquireRequest{Key: "nightly-report", Owner: owner})
	if err != nil {
		panic(err)
	}
	fmt.Println("token", grant.Token)

	_, err = b.Acquire(ctx, driver.AcquireRequest{Key: "nightly-report", Owner: driver.NewOwner()})
	fmt.Println("locked elsewhere:", errors.Is(err, driver.ErrLocked))

	if err := a.Release(ctx, "nightly-report", owner); err != nil {
		panic(err)
	}
	grant, err = b.Acquire(ctx, driver.AcquireRequest{Key: "nightly-report", Owner: driver.NewOwner()})
	if err != nil {
		panic(err)
	}
	fmt.Println("token", grant.Token)
	// Output:
	// token 1
	// locked elsewhere: true
	// token 2
}

func ExampleFileName() {
	fmt.Println(file.FileName("nightly-report"))
	fmt.Println(file.FileName("../../etc/passwd"))
	// Output:
	// nightly-report-6743ba10a2b2c4879cf6af5c75140be7.lock
	// etc_passwd-3754d6cb3a38e1185e5b382d5f3ef3f1.lock
}
