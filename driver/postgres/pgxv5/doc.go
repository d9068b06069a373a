// Package pgxv5 makes github.com/jackc/pgx/v5 pools first class for
// mutexkit's PostgreSQL driver.
package pgxv5
