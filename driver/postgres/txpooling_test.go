package postgres

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A statement the session prepared but its backend does not know (SQLSTATE
// 26000: what a transaction-pooling proxy that switched backends causes,
// see TestClusterPgBouncer) is ErrTransactionPooling: the session is given
// up and its leases reported lost, not retried as if it were alive.
// Simulated without a proxy by deallocating the session's statements.
func TestMissingPreparedStatementIsTxPooling(t *testing.T) {
	dsn, _ := adminDB(t)
	_, _, lease, s := holdOnSession(t, dsn)
	_, err := s.conn.ExecContext(background, `DEALLOCATE ALL`)
	s.give()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-lease.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("loss not reported")
	}
	err = lease.Err()
	if !errors.Is(err, ErrTransactionPooling) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Err = %v; want ErrTransactionPooling naming the missing statement", err)
	}
}
