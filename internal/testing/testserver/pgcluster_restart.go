package testserver

// Restart stops the server at once (Stop: every session ends, as in a
// crash) and starts it again on the same port and data directory,
// returning once it accepts connections (crash recovery first, so up to
// pgStartTimeout). What was committed stays; what lived only in sessions
// (advisory locks, the lock manager's queue of waiters) is gone. It
// returns an error rather than failing the test, so that a subtest's
// goroutine may call it.
func (c *PGCluster) Restart() error {
	c.Stop()
	return c.start()
}
