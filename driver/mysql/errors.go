package mysql

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/mutexkit/mutexkit/driver"
)

// Errors of this driver, to be checked with errors.Is.
var (
	// ErrReadOnly: the server is read-only (@@read_only), as a replica is.
	// GET_LOCK on a replica excludes no one on the primary, so it is
	// refused. The error also matches driver.ErrInvalid.
	ErrReadOnly = errors.New("mysql: the server is read-only (@@read_only = 1, a replica?); user-level locks taken there exclude no one on the primary: connect to the primary")

	// ErrMultiplexing: statements of one lock session ran on different
	// server connections (CONNECTION_ID() changed), as behind a proxy that
	// multiplexes (ProxySQL with multiplexing on for these statements).
	// User-level locks belong to a server connection, so they cannot work
	// there. The error also matches driver.ErrInvalid.
	ErrMultiplexing = errors.New("mysql: statements of one session reached different server connections (a multiplexing proxy?); user-level locks need a direct connection, or a proxy that pins the session")
)

// kindError adds a driver sentinel to an error of this package.
type kindError struct{ err, kind error }

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.err, e.kind} }

var (
	errReadOnly     error = kindError{ErrReadOnly, driver.ErrInvalid}
	errMultiplexing error = kindError{ErrMultiplexing, driver.ErrInvalid}
	errClosedLocker       = fmt.Errorf("mysql: locker: %w", driver.ErrClosed)
	errNotHeld            = fmt.Errorf("mysql: key not held by this owner: %w", driver.ErrNotHeld)
)

// Server error numbers this driver tells apart.
const (
	erDBAccessDenied     = 1044 // ER_DBACCESS_DENIED_ERROR
	erAccessDenied       = 1045 // ER_ACCESS_DENIED_ERROR
	erBadDB              = 1049 // ER_BAD_DB_ERROR
	erTableAccessDenied  = 1142 // ER_TABLEACCESS_DENIED_ERROR
	erColumnAccessDenied = 1143 // ER_COLUMNACCESS_DENIED_ERROR
	erSpecificAccess     = 1227 // ER_SPECIFIC_ACCESS_DENIED_ERROR
	erPasswordExpired    = 1820 // ER_MUST_CHANGE_PASSWORD
	erAccountLocked      = 3118 // ER_ACCOUNT_HAS_BEEN_LOCKED (MySQL)
	erAccountLockedMaria = 4151 // ER_ACCOUNT_HAS_BEEN_LOCKED (MariaDB)
	erReadOnly           = 1290 // ER_OPTION_PREVENTS_STATEMENT (--read-only)
	erNoDB               = 1046 // ER_NO_DB_ERROR
)

// denied reports the server's refusal of this client, which no retry
// cures: its credentials, an unknown database, a privilege it lacks
// (CREATE, INSERT or UPDATE on the fencing table).
func denied(err error) bool {
	var me *gomysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	switch me.Number {
	case erDBAccessDenied, erAccessDenied, erBadDB, erTableAccessDenied, erColumnAccessDenied,
		erSpecificAccess, erPasswordExpired, erAccountLocked, erAccountLockedMaria, erNoDB:
		return true
	}
	return false
}

// badSetting reports the server's refusal of a setting the DSN asked for as
// the connection opened (go-sql-driver sends each parameter it does not
// know as SET name = value, and charset as SET NAMES): no retry cures it.
func badSetting(err error) bool {
	switch mysqlNumber(err) {
	case 1064, // ER_PARSE_ERROR: a value that does not parse
		1115, // ER_UNKNOWN_CHARACTER_SET
		1193, // ER_UNKNOWN_SYSTEM_VARIABLE
		1228, // ER_LOCAL_VARIABLE
		1229, // ER_GLOBAL_VARIABLE
		1231, // ER_WRONG_VALUE_FOR_VAR
		1232, // ER_WRONG_TYPE_FOR_VAR
		1238, // ER_INCORRECT_GLOBAL_LOCAL_VAR (read-only variable)
		1273: // ER_UNKNOWN_COLLATION
		return true
	}
	return false
}

// failureKind is the driver sentinel of a failed exchange with the server.
func failureKind(err error) error {
	var me *gomysql.MySQLError
	switch {
	case denied(err):
		return driver.ErrDenied
	case errors.As(err, &me) && me.Number == erReadOnly:
		return errReadOnly
	}
	return driver.ErrUnavailable
}

// sessionSurvives reports whether a statement's error leaves the session,
// and the locks on it, in place: an error the server sent as a reply (a
// denied table, an interrupted statement), except those that end the
// connection. Anything else (a closed socket, a missed reply deadline)
// means the session may be gone.
func sessionSurvives(err error) bool {
	var me *gomysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	switch me.Number {
	case 1053, // ER_SERVER_SHUTDOWN
		1077, 1078, 1079, 1080, // normal shutdown, got signal, shutdown complete, forcing close
		1152, 1153, 1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, // aborted connection, packet errors
		1184, // ER_NEW_ABORTING_CONNECTION
		1927, // ER_CONNECTION_KILLED (MariaDB)
		4031: // ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8: wait_timeout)
		return false
	}
	return true
}

// minSecret is the shortest secret redact removes. No message of this
// driver quotes a DSN, so a password reaches one only if a library quotes
// it; a shorter one is also a piece of ordinary words ("on", "err"), and
// replacing each of those would mangle the message, hiding nothing.
const minSecret = 4

// redact removes secret from msg, as written and in its URL escapes.
func redact(msg, secret string) string {
	if len(secret) < minSecret {
		return msg
	}
	msg = strings.ReplaceAll(msg, secret, "xxxxx")
	if esc := url.QueryEscape(secret); esc != secret {
		msg = strings.ReplaceAll(msg, esc, "xxxxx")
	}
	if esc := url.PathEscape(secret); esc != secret {
		msg = strings.ReplaceAll(msg, esc, "xxxxx")
	}
	return msg
}

// redactedError shows a message with secrets removed and still unwraps to
// the cause, for errors.Is.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactErr returns err with each secret removed from its text: the
// password, and a lock name (which begins with the key).
func redactErr(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, s := range secrets {
		msg = redact(msg, s)
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

// mysqlNumber is the server's error number in err, or 0.
func mysqlNumber(err error) uint16 {
	var me *gomysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}
