//go:build linux || darwin || freebsd || openbsd || dragonfly

package file

import "golang.org/x/sys/unix"

const clockMonotonic = unix.CLOCK_MONOTONIC
