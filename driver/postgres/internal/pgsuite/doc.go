// Package pgsuite is the PostgreSQL driver's scenario suite, shared by the
// clients it runs on: lib/pq (the core module's tests, NewConnector and
// FromDB) and pgx (driver/postgres/pgxv5, FromPool). Each scenario is a
// function of a *testing.T and a Client, the factory of connectors on a
// DSN; Run runs them all as subtests, and a module may call one scenario
// under the name its test had before. The same bodies run on every client,
// so a trap found on one is checked on all.
//
// The scenarios: Conformance (package conformance, as asked and always
// fenced) and ConformanceRestartEmpty (its case Queue/RestartEmpty alone,
// on a private server it restarts); the traps a driver on PostgreSQL must not fall into
// (NoRegrantToSameSession, DeadlineNeverCancelsSession,
// ServerSideTimeoutBoundsStatements, KilledSessionLosesEveryLease,
// PoolDiscardsSessions, CancelledUnlockReleases, TwoThousandKeysFewSessions,
// MaxKeys); several processes (TwoProcessesExclude,
// CrashedProcessFreesKey); and private servers (ClusterNetworkCutFreesLocks,
// ClusterPgBouncer, ClusterStandbyRefused, ClusterSilentPeer,
// ClusterSilentPeerAtConnect).
//
// Tests that stay with lib/pq alone, in the core module: the DSN's parsing
// and its mutexkit_ parameters (dsn_test.go, fuzz_test.go), TLS and
// passwords given in the DSN (cluster_tls_test.go, TestClusterPasswordAuth,
// TestClusterRefusedClient: a pgx pool reads its own DSN and does its own
// TLS; pgxv5's TestRefusedPool checks how its refusals are classified),
// the keepalive the driver sets on a socket it dialled itself
// (TestKeepaliveSet: a pgx pool dials its own; pgxv5's
// TestKeepaliveOnServerSide checks the server's side),
// and traps that reach into the driver's sessions behind its back
// (TestUnlockFalseIsNotHeld, TestTransactionPoolingRefused; the real
// pgbouncer scenario covers the latter on every client).
//
// Scenarios that need several processes re-execute the test binary: each
// module's tests must have
//
//	func TestHelperProcess(t *testing.T) { pgsuite.HelperProcess(t, client) }
//
// which does nothing unless a scenario started it.
//
// Administration (reading pg_locks, killing backends, the other
// application's transactions) goes through database/sql and lib/pq
// whatever the client under test: it is the observer, not the subject.
// Its helpers (Namespace, OpenDB, HolderPID, BlockFencedAcquire, WaitFor)
// serve a module's own tests too, so that each is written once.
package pgsuite
