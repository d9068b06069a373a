package driver

import (
	"crypto/rand"
	"encoding/hex"
)

// Owner identifies one lock attempt and the lease it yields: 128 bits from
// crypto/rand, so no other client can guess it and release or extend a lock
// it does not hold. A retried attempt keeps its Owner, so it can recognise
// its own grant.
type Owner [16]byte

// NewOwner returns a fresh random Owner.
func NewOwner() Owner {
	var o Owner
	rand.Read(o[:]) // crypto/rand.Read never fails; it crashes the program if the OS source does.
	return o
}

// String returns the Owner as 32 hex digits.
func (o Owner) String() string { return hex.EncodeToString(o[:]) }

// IsZero reports whether o is the zero Owner, which no lease has.
func (o Owner) IsZero() bool { return o == Owner{} }
