//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package file

import (
	"context"
	"fmt"

	"github.com/mutexkit/mutexkit/driver"
)

// Inspect is Linux-only: elsewhere no kernel table tells who holds a flock
// without taking one.
func (l *locker) Inspect(context.Context, string) (driver.Holder, bool, error) {
	return driver.Holder{}, false, fmt.Errorf("file: inspect: %w", driver.ErrUnimplemented)
}
