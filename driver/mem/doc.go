// Package mem is an in-process lock driver for tests, examples and
// single-process programs. It registers the URL scheme "mem".
//
// Clients opened with the same DSN in one process share one lock table (the
// DSN names it; "mem:" is the default table), so two clients act as two
// clients of one backend:
//
//	a, _ := mutex.Open("mem://orders")
//	b, _ := mutex.Open("mem://orders") // excludes a's holders
//
// Grants expire at their TTL unless renewed, as on Redis, and carry fencing
// tokens. A table can be given a clock (WithClock) and made to lose grants
// (Table.Drop, Table.Expire), so an application can test how it handles a
// lost lock without sleeping.
//
// It is also the smallest complete driver: driver.go opens connectors,
// table.go is the backend, and locker.go is the driver.Locker over it.
package mem
