//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package file

import (
	"fmt"

	"github.com/mutexkit/mutexkit/driver"
)

// checkDir: flock(2) is not available here, so Connect fails.
func checkDir(dir string) error {
	return fmt.Errorf("file: flock is not available on this system: %w", driver.ErrUnimplemented)
}

func newLocker(dir string, notify bool) driver.Locker { panic("unreachable") }
