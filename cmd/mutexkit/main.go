// Command mutexkit runs a program under a distributed lock, the cron case
// with no code: in every pod the same schedule fires, one pod runs the job,
// the others skip.
//
//	mutexkit run --key nightly-report -- ./report --since yesterday
//	mutexkit status --key nightly-report
//	mutexkit drivers
//	mutexkit version
//
// The lock's backend follows from the DSN (--dsn or MUTEXKIT_DSN):
// postgres://, redis:// or rediss://, or file://. With no DSN it
// uses the file driver in its default directory, which coordinates the
// processes of one host only, and says so.
//
// Exit codes of run: the program's own; 75 when the lock was held elsewhere
// and the job skipped (--skip-code), also when --wait ran out with the lock
// still held; 76 when the lock was lost while the program ran and it was
// stopped (--lost-code); 64 for bad usage; 69 when the lock backend failed,
// or was unreachable when --wait ran out; 78 when the backend refused the
// credentials or database; 127 when the program could not be started;
// 128+N when the program died of signal N. Of status: 0 free, 75 held, and
// 64, 69, 78 as for run.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	_ "github.com/mutexkit/mutexkit/driver/file"
	_ "github.com/mutexkit/mutexkit/driver/postgres"
	_ "github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/mutex"
)

// Exit codes of the command itself (sysexits.h where one fits).
const (
	exitUsage       = 64 // EX_USAGE
	exitUnavailable = 69 // EX_UNAVAILABLE: the lock backend failed
	exitSkipped     = 75 // EX_TEMPFAIL: held elsewhere, try later
	exitLost        = 76 // the lease was lost while the program ran
	exitDenied      = 78 // EX_CONFIG: the backend refused the credentials or database

	// exitHeld: status of a held lock, the code with which run would skip.
	exitHeld = exitSkipped
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// realMain runs the command and returns its exit code.
func realMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return runCmd(args[1:], stdin, stdout, stderr)
	case "status":
		return statusCmd(args[1:], stdout, stderr)
	case "drivers":
		switch {
		case len(args) == 2 && isHelp(args[1]):
			fmt.Fprint(stdout, driversUsage)
			return 0
		case len(args) > 1:
			fmt.Fprintln(stderr, "mutexkit drivers: takes no arguments; see mutexkit drivers --help")
			return exitUsage
		}
		fmt.Fprintln(stdout, strings.Join(mutex.Schemes(), "\n"))
		return 0
	case "version", "-version", "--version":
		return versionCmd(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mutexkit: unknown command %q; see mutexkit --help\n", args[0])
	return exitUsage
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// parseFlags parses a subcommand's flags. Help, asked for, goes to stdout
// in full; a mistake gets one line on stderr, as every other error does,
// not the whole help. done is true when the command should exit with code.
func parseFlags(fs *flag.FlagSet, help string, args []string, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(io.Discard) // the flag package would print the error and the whole help
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, help)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return 0, true
	case err != nil:
		return usageFail(stderr, fs.Name(), err), true
	}
	return 0, false
}

// usageFail prints a usage mistake on one line and returns exitUsage.
func usageFail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "mutexkit %s: %v; see mutexkit %s --help\n", cmd, err, cmd)
	return exitUsage
}

// backendCode is the exit code for err from the lock backend: a refusal
// of the client's credentials or database is a configuration error, not
// an outage; a malformed argument is a usage error.
func backendCode(err error) int {
	switch {
	case errors.Is(err, mutex.ErrDenied):
		return exitDenied
	case errors.Is(err, mutex.ErrInvalid):
		return exitUsage
	}
	return exitUnavailable
}

// fail prints err on one line, prefixed, and returns code.
func fail(stderr io.Writer, code int, err error) int {
	fmt.Fprintf(stderr, "mutexkit: %s\n", oneLine(err))
	return code
}

// oneLine joins a multi-line error (errors.Join) into one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

const usage = `mutexkit runs a program under a distributed lock.

Usage:
  mutexkit run [flags] -- program [args...]   run program while holding the lock
  mutexkit status [flags]                     tell whether a lock is free or held, and by whom
  mutexkit drivers                            list the DSN schemes of the drivers compiled in
  mutexkit version                            print the version of this binary

Run "mutexkit run --help" or "mutexkit status --help" for their flags.

The backend follows from the DSN (--dsn, or MUTEXKIT_DSN):
  postgres://user:pass@host:5432/db       PostgreSQL advisory locks
  redis://host:6379 or rediss://...       Redis (several hosts, comma-separated: Redlock)
  file:///var/lock/mutexkit               flock(2) on files: this host only
  (none)                                  file: the file driver in $TMPDIR/mutexkit-locks: this host only
`

const driversUsage = `Usage: mutexkit drivers

Lists the DSN schemes (postgres, redis, file, ...) of the drivers compiled
into this binary, one per line.
`
