//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package file

import (
	"fmt"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// checkDir: flock(2) is not available here, so Connect fails.
func checkDir(dir string) error {
	return fmt.Errorf("file: flock is not available on this system: %w", driver.ErrUnimplemented)
}

func newLocker(dir string, heartbeat time.Duration) driver.Locker { panic("unreachable") }
