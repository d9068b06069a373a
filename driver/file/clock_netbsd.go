package file

// clockMonotonic is NetBSD's CLOCK_MONOTONIC (sys/time.h), which
// golang.org/x/sys/unix does not name there.
const clockMonotonic = 3
