// Package backend is the door through which a module under driver/postgres
// (driver/postgres/pgxv5) supplies another client library's connections
// and errors, while package postgres keeps the Locker, its sessions, waits
// and deadlines. Go's internal rule keeps it out of reach of anyone else,
// so no exported API of postgres carries these types.
package backend

import (
	"database/sql"
	"net"

	"github.com/mutexkit/mutexkit/driver"
)

// ServerError is what the driver reads of an error the server sent (an
// ErrorResponse): a reply, which the session may survive, unlike a broken
// connection.
type ServerError struct {
	Code     string // SQLSTATE, such as "57014"
	Severity string // unlocalized: ERROR, FATAL or PANIC
	Message  string // the primary message; never a password
}

// Pool is an application's pool as a module supplies it.
type Pool struct {
	// Open returns a *sql.DB whose connections are taken from the pool
	// and destroyed, never handed back, when database/sql closes them: a
	// lock session may hold locks and carries the driver's settings. It
	// is called once per Connect; the Locker closes the *sql.DB (never
	// the pool) on Close. An error is Connect's, and should match
	// driver.ErrInvalid.
	Open func() (*sql.DB, error)

	// Secret is the pool's password, removed from every error.
	Secret string
}

// Socket is implemented by a driver connection of Pool.Open's *sql.DB that
// can give its network connection. The driver then bounds each exchange on
// a lock session with the socket's deadline, and closes it to end a
// session at once (see package postgres, deadline.go); without it an
// exchange that misses its reply deadline is left to finish in a goroutine
// of its own.
type Socket interface {
	NetConn() net.Conn
}

// NewConnector is set by package postgres: a Connector whose lock sessions
// are connections of p. opts is a []postgres.Option.
var NewConnector func(p Pool, opts any) driver.Connector

// serverErrors reads a module's server errors; set by SetServerErrors.
var serverErrors func(error) (ServerError, bool)

// SetServerErrors makes AsServerError recognise a module's error type (in
// errors' chains) as server errors. Call it from an init function only:
// it is read without a lock.
func SetServerErrors(f func(error) (ServerError, bool)) { serverErrors = f }

// AsServerError reports the server error in err's chain that a module
// recognises (see SetServerErrors).
func AsServerError(err error) (ServerError, bool) {
	if serverErrors == nil || err == nil {
		return ServerError{}, false
	}
	return serverErrors(err)
}
