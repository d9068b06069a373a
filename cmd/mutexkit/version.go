package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

const versionUsage = `Usage: mutexkit version

Prints the version of the module this binary was built from, the Go version
that built it, and the platform. "go install ...@v0.1.0" stamps v0.1.0; a
build in a git checkout stamps a pseudo-version of the commit (+dirty with
uncommitted changes); a build without version control information
(-buildvcs=false, a copy of the source without .git) says (devel).
`

func versionCmd(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 1 && isHelp(args[0]):
		fmt.Fprint(stdout, versionUsage)
		return 0
	case len(args) > 0:
		fmt.Fprintln(stderr, "mutexkit version: takes no arguments; see mutexkit version --help")
		return exitUsage
	}
	fmt.Fprintln(stdout, versionLine())
	return 0
}

// versionLine is "mutexkit VERSION GOVERSION OS/ARCH", the module version
// from the build information.
func versionLine() string {
	version, goVersion := "(devel)", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		goVersion = bi.GoVersion
	}
	return fmt.Sprintf("mutexkit %s %s %s/%s", version, goVersion, runtime.GOOS, runtime.GOARCH)
}
