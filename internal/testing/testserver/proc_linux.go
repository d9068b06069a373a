package testserver

import "syscall"

// dieWithParent makes a server the tests start die with the test process,
// even when the test binary is killed (a -timeout panic skips t.Cleanup).
// The signal follows the thread that started the server; test goroutines
// never lock their threads, so the runtime does not end those threads early.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
