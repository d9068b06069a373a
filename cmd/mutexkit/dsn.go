package main

import (
	"errors"
	"os"
	"strings"
)

// backend is the DSN a command opens with mutex.Open: the registry of the
// drivers compiled in picks the driver by the URL's scheme.
type backend struct {
	dsn      string
	fallback bool // no DSN given: the file driver in its default directory
}

// errMemDriver: the mem driver's table lives in the process, and the
// command's process ends with its run, so every run would find the lock
// free. The command does not compile it in.
var errMemDriver = errors.New("the mem driver keeps locks in the memory of one process, and each mutexkit run is a process of its own: it would always find the lock free; use a server DSN, or the file driver for this host")

// resolveBackend returns the DSN of --dsn, else $MUTEXKIT_DSN, else the
// file driver's default directory ("file:").
func resolveBackend(dsnFlag string) (backend, error) {
	dsn := dsnFlag
	if dsn == "" {
		dsn = os.Getenv("MUTEXKIT_DSN")
	}
	if dsn == "" {
		return backend{dsn: "file:", fallback: true}, nil
	}
	if scheme, _, _ := strings.Cut(dsn, ":"); strings.EqualFold(scheme, "mem") {
		return backend{}, errMemDriver
	}
	return backend{dsn: dsn}, nil
}
