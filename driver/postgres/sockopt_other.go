//go:build !linux

package postgres

import (
	"syscall"
	"time"
)

// setUserTimeout: TCP_USER_TIMEOUT is Linux-only; keepalive alone bounds
// idle connections elsewhere.
func setUserTimeout(syscall.RawConn, time.Duration) error { return nil }
