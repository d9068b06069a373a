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
// (Table.Drop, Table.Expire) or everything (Table.RestartEmpty), so an
// application can test how it handles a lost lock without sleeping.
//
// Waiters are served in arrival order (FIFO). Each key has a wait queue in
// the table, shared by all its clients as pods share a server: a waiting
// Lock that finds the key held joins it, a release keeps the key for the
// oldest waiter alone and wakes only that waiter's Watch, and a waiter that
// gives up leaves the queue, passing on a key kept for it. A waiter that
// stops asking (its process died) is passed over driver.QueueHold after its
// last attempt.
//
// It is also the smallest complete driver: driver.go opens connectors,
// table.go is the backend, queue.go its wait queues, and locker.go the
// driver.Locker over them.
package mem
