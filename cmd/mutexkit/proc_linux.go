package main

import "syscall"

// sysProcAttr makes the program die with this command (the parent-death
// signal), even if mutexkit is killed with SIGKILL: otherwise the lock
// would be free while the job still runs. ownGroup gives it a process group
// of its own, so signals reach its children too.
func sysProcAttr(ownGroup bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: ownGroup, Pdeathsig: syscall.SIGKILL}
}
