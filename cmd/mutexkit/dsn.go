package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// backend is the driver and DSN a command opens.
type backend struct {
	driver, dsn string
	fallback    bool // no DSN given: the file driver in its default directory
}

// errMemDriver: the mem driver's table lives in the process, and the
// command's process ends with its run, so every run would find the lock
// free. The command does not compile it in.
var errMemDriver = errors.New("the mem driver keeps locks in the memory of one process, and each mutexkit run is a process of its own: it would always find the lock free; use a server DSN, or the file driver for this host")

// resolveBackend picks the driver: --driver if given, else from the DSN's
// scheme. The error names the scheme, never the rest of the DSN, which may
// hold a password.
func resolveBackend(driverFlag, dsnFlag string) (backend, error) {
	dsn := dsnFlag
	if dsn == "" {
		dsn = os.Getenv("MUTEXKIT_DSN")
	}
	if driverFlag == "mem" {
		return backend{}, errMemDriver
	}
	if driverFlag != "" {
		return backend{driver: driverFlag, dsn: dsn}, nil
	}
	if dsn == "" {
		return backend{driver: "file", dsn: defaultFileDir(), fallback: true}, nil
	}
	scheme, _, hasScheme := strings.Cut(dsn, "://")
	if !hasScheme {
		switch {
		case strings.HasPrefix(dsn, "/"), strings.HasPrefix(dsn, "."):
			return backend{driver: "file", dsn: dsn}, nil // a directory
		case strings.Contains(dsn, "="):
			return backend{driver: "postgres", dsn: dsn}, nil // libpq key=value
		}
		return backend{}, fmt.Errorf("cannot tell the driver from the DSN: give a URL (postgres://, redis://, rediss://, file://), a directory, or --driver")
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		return backend{driver: "postgres", dsn: dsn}, nil
	case "redis", "rediss":
		return backend{driver: "redlock", dsn: dsn}, nil
	case "file":
		return backend{driver: "file", dsn: dsn}, nil
	case "mem":
		return backend{}, errMemDriver
	}
	return backend{}, fmt.Errorf("unknown DSN scheme %q: want postgres://, redis://, rediss:// or file://, or --driver", scheme)
}

// defaultFileDir is where the command keeps lock files without a DSN. Not
// $TMPDIR/mutexkit, the obvious place to build the binary: one of the two
// would find the other in its way.
func defaultFileDir() string { return filepath.Join(os.TempDir(), "mutexkit-locks") }
