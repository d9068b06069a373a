package postgres

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres/internal/backend"
)

// Errors of this driver, to be checked with errors.Is.
var (
	// ErrTooManyKeys: the client already holds as many keys as its cap
	// (WithMaxKeys) allows. It protects the server's shared lock table.
	ErrTooManyKeys = errors.New("postgres: too many keys held by this client")

	// ErrStandby: the server is in recovery (a hot standby). A standby
	// grants advisory locks that the primary never sees, so it is refused.
	// The error also matches driver.ErrInvalid.
	ErrStandby = errors.New("postgres: the server is a hot standby (pg_is_in_recovery() is true); advisory locks taken there exclude no one on the primary: connect to the primary")

	// ErrTransactionPooling: statements of one session reached different
	// server backends, as behind pgbouncer in transaction (or statement)
	// pooling mode. Session-level advisory locks cannot work there: use a
	// direct connection or session pooling, or the transaction-scoped
	// LockTx. The error also matches driver.ErrInvalid.
	ErrTransactionPooling = errors.New("postgres: statements of one session reached different server backends (a transaction-pooling proxy such as pgbouncer in transaction mode?); session-level advisory locks need a direct connection or session pooling")
)

// kindError adds a driver sentinel to an error of this package.
type kindError struct {
	err, kind error
}

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.err, e.kind} }

var (
	errStandby     error = kindError{ErrStandby, driver.ErrInvalid}
	errTxPooling   error = kindError{ErrTransactionPooling, driver.ErrInvalid}
	errClosedLock        = fmt.Errorf("postgres: locker: %w", driver.ErrClosed)
	errNoReply           = errors.New("no reply from the server in time")
	errBackendGone       = errors.New("its backend is no longer in pg_stat_activity")
)

// serverError reads the error the server sent, if err is one: lib/pq's
// *pq.Error, or another client library's as its module makes it known
// (driver/postgres/pgxv5 for pgx's *pgconn.PgError; see internal/backend).
// Every classification below goes through it.
func serverError(err error) (backend.ServerError, bool) {
	if pe, ok := errors.AsType[*pq.Error](err); ok {
		return backend.ServerError{Code: string(pe.Code), Severity: pe.Severity, Message: pe.Message}, true
	}
	return backend.AsServerError(err)
}

// sqlState is the SQLSTATE of the server error in err, or "".
func sqlState(err error) string {
	se, _ := serverError(err)
	return se.Code
}

// sessionSurvives reports whether a statement's error leaves the session
// usable and its locks in place: an ERROR the server reported (a statement
// timeout, say). Anything else (FATAL, a broken connection, a closed
// *sql.Conn) means the session, and every lock on it, may be gone.
func sessionSurvives(err error) bool {
	se, ok := serverError(err)
	return ok && se.Severity != "FATAL" && se.Severity != "PANIC"
}

// connGone reports an error that shows a session's connection closed, or
// its backend gone: neither a reply of the server's (sessionSurvives), nor
// a missed reply deadline (the backend may live on, locks and all), nor a
// proxy's switch of backends.
func connGone(err error) bool {
	return !sessionSurvives(err) && !errors.Is(err, errNoReply) && !isTxPooling(err) && !errors.Is(err, driver.ErrClosed)
}

// denied reports the server's refusal of this client, which no retry
// cures: its credentials (SQLSTATE class 28: a wrong password, an unknown
// role or one that may not log in, no pg_hba.conf entry), an unknown
// database (3D000), or a privilege it lacks (42501: CONNECT on the
// database, CREATE for the fencing table).
func denied(err error) bool {
	code := sqlState(err)
	return strings.HasPrefix(code, "28") || code == "3D000" || code == "42501"
}

// failureKind is the driver sentinel of a failed exchange with the server:
// driver.ErrDenied for a refusal (see denied), else driver.ErrUnavailable.
func failureKind(err error) error {
	if denied(err) {
		return driver.ErrDenied
	}
	return driver.ErrUnavailable
}

// outOfLocks reports the server's "out of shared memory" on a full lock
// table.
func outOfLocks(err error) bool { return sqlState(err) == "53200" }

func isTxPooling(err error) bool { return errors.Is(err, ErrTransactionPooling) }

// txPoolingErr turns the server's "prepared statement ... does not exist"
// (SQLSTATE 26000) on a lock session into ErrTransactionPooling. A lock
// session's statements are prepared on it and never deallocated, and
// lib/pq parses a statement with parameters and binds it in two
// exchanges: a statement the backend does not know reached another backend
// than the one it was prepared on, which is what a transaction-pooling
// proxy does (pgbouncer before 1.21, or without max_prepared_statements,
// passes prepared statements through unchanged). Other errors are returned
// as they are. The result does not unwrap to the server's error, so
// sessionSurvives reports the session lost.
//
// "prepared statement ... already exists" (42P05) counts the same: lib/pq
// names a connection's statements "1", "2", ... afresh (pgx after a hash
// of their text), so a backend that knows the name already is shared with
// another client's session.
func txPoolingErr(err error) error {
	if se, ok := serverError(err); ok {
		switch se.Code {
		case "26000":
			return fmt.Errorf("postgres: %s, though this session prepared it: %w", se.Message, errTxPooling)
		case "42P05":
			return fmt.Errorf("postgres: %s, though this session did not prepare it: %w", se.Message, errTxPooling)
		}
	}
	return err
}

// redact removes secret from msg, as written and in its URL escapes.
func redact(msg, secret string) string {
	if secret == "" {
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

// redactedError shows a message with the password removed and still
// unwraps to the cause, for errors.Is.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactErr returns err with secret removed from its text.
func redactErr(err error, secret string) error {
	if err == nil || secret == "" {
		return err
	}
	if msg := redact(err.Error(), secret); msg != err.Error() {
		return &redactedError{msg: msg, err: err}
	}
	return err
}
