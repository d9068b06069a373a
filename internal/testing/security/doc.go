// Package security holds cross-driver security tests: no DSN password in
// any error, log record or span; owner values unguessable; a non-owner can
// neither release nor extend a lock. It has no code of its own.
package security
