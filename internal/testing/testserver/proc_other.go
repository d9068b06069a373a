//go:build !linux

package testserver

import "syscall"

// dieWithParent: no parent-death signal outside Linux; t.Cleanup stops
// servers on a normal exit.
func dieWithParent() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
