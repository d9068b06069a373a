// Package chaos is mutexkit's reliability suite: it runs many lock clients in
// several OS processes against a real backend, injects faults (killed,
// paused and restarted servers, a TCP proxy that delays, drops or
// blackholes traffic, terminated sessions, paused holders), and checks the
// history of critical sections for overlaps, for fencing tokens that fail
// to increase, and for linearizability against a model of a lock per key
// (github.com/anishathalye/porcupine).
//
// # The clock
//
// Every timestamp is a raw CLOCK_MONOTONIC reading in nanoseconds, taken
// with clock_gettime(2) (golang.org/x/sys/unix.ClockGettime). Go's own
// monotonic reading inside time.Time is the same clock on Linux, but it is
// only exposed as differences between two time.Time values of one process;
// the raw value is shared by every process on the machine, so sections
// recorded by different worker processes and faults injected by the test
// process compare directly. The clock does not jump with NTP steps and does
// not count time the machine is suspended.
//
// # Workers
//
// The test binary re-executes itself as worker processes (see Spawn and
// WorkerMain). Each opens its own mutex clients, takes a few shared keys in
// turn, and reports every critical section on stdout as one JSON line. A
// fenced store in the test process (Store) plays the guarded resource: it
// refuses writes whose token is older than the newest it has seen.
package chaos
