package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mutexkit/mutexkit/mutex"
)

const statusUsage = `Usage: mutexkit status --key KEY [--dsn DSN]

Tells whether the lock KEY is free or held and, as far as the backend keeps
it, by whom: host, process id, since when, fencing token, and the backend's
own id of the holding session (a PostgreSQL backend pid, a MySQL connection
id), the one to end it with, e.g. SELECT pg_terminate_backend(ID) or
KILL CONNECTION ID. It takes nothing.

Output, one line: "KEY" is free, or "KEY" is held by host H, pid P,
since T (D ago), token N, session ID, each part present only when known,
in that order.

Exit codes, for scripts: 0 free; 75 held (the code with which run would
skip); 64 bad usage; 69 the lock backend failed; 78 the backend refused
the credentials or database.

Examples:
  mutexkit status --key nightly-report
  MUTEXKIT_DSN=redis://redis:6379 mutexkit status --key migrate
  if mutexkit status --key migrate >/dev/null; then echo free; fi

Flags:
`

func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	key := fs.String("key", "", "lock key (required)")
	dsn := fs.String("dsn", "", "lock backend DSN (default $MUTEXKIT_DSN; none: the file driver, this host only)")
	if code, done := parseFlags(fs, statusUsage, args, stdout, stderr); done {
		return code
	}
	if *key == "" || fs.NArg() > 0 {
		return usageFail(stderr, "status", errors.New("--key is required, and nothing else"))
	}
	be, err := resolveBackend(*dsn)
	if err != nil {
		return fail(stderr, exitUsage, err)
	}
	client, err := mutex.Open(be.dsn)
	if err != nil {
		return fail(stderr, exitUsage, err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	who, held, err := client.Inspect(ctx, *key)
	if err != nil {
		return fail(stderr, backendCode(err), err)
	}
	fmt.Fprintln(stdout, describe(*key, who, held))
	if held {
		return exitHeld
	}
	return 0
}

// describe says who holds key, with what the backend knows.
func describe(key string, who mutex.Holder, held bool) string {
	if !held {
		return fmt.Sprintf("%q is free", key)
	}
	var parts []string
	if who.Host != "" {
		parts = append(parts, "host "+who.Host)
	}
	if who.PID != 0 {
		parts = append(parts, fmt.Sprintf("pid %d", who.PID))
	}
	if !who.Since.IsZero() {
		parts = append(parts, fmt.Sprintf("since %s (%s ago)", who.Since.Format(time.RFC3339), time.Since(who.Since).Round(time.Second)))
	}
	if who.Token != 0 {
		parts = append(parts, fmt.Sprintf("token %d", who.Token))
	}
	if who.Session != "" {
		parts = append(parts, "session "+who.Session)
	}
	if len(parts) == 0 {
		return fmt.Sprintf("%q is held (the backend does not say by whom)", key)
	}
	return fmt.Sprintf("%q is held by %s", key, strings.Join(parts, ", "))
}
