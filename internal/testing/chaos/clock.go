//go:build linux

package chaos

import "golang.org/x/sys/unix"

// Now returns CLOCK_MONOTONIC in nanoseconds: comparable across the
// processes of one machine (see the package documentation).
func Now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("chaos: clock_gettime(CLOCK_MONOTONIC): " + err.Error())
	}
	return ts.Nano()
}
