//go:build !linux

package main

import "syscall"

// sysProcAttr: without a parent-death signal outside Linux, a program can
// outlive a mutexkit killed with SIGKILL; a process group still lets
// signals reach its children.
func sysProcAttr(ownGroup bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: ownGroup}
}
