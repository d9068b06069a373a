package postgres

import (
	"crypto/sha256"
	"encoding/binary"
)

// KeyID returns the 64-bit PostgreSQL advisory lock key that a lock on key
// uses in namespace: the first 8 bytes, big-endian, of
//
//	SHA-256( u32be(len(namespace)) || namespace || u32be(len(key)) || key )
//
// read as a two's-complement int64. The length prefixes keep ("a", "bc")
// and ("ab", "c") apart. The empty namespace is the default.
//
// SQL that calls pg_advisory_lock(KeyID(ns, key)) (or the _xact, _try and
// _shared variants) takes the same lock a mutex on key does, so the two
// exclude each other. In pg_locks the lock is the row with locktype
// 'advisory', objsubid 1, classid the high 32 bits and objid the low 32
// bits of the key (see LockTag):
//
//	SELECT pid, granted FROM pg_locks
//	WHERE locktype = 'advisory' AND objsubid = 1
//	  AND classid = <id >> 32> AND objid = <id & 0xffffffff>;
//
// KeyIDSQL computes the same id in SQL.
func KeyID(namespace, key string) int64 {
	h := sha256.New()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(namespace)))
	h.Write(n[:])
	h.Write([]byte(namespace))
	binary.BigEndian.PutUint32(n[:], uint32(len(key)))
	h.Write(n[:])
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	return int64(binary.BigEndian.Uint64(h.Sum(sum[:0])))
}

// LockTag splits an advisory lock key into the classid and objid columns
// under which pg_locks shows it (with objsubid 1).
func LockTag(id int64) (classid, objid uint32) {
	return uint32(uint64(id) >> 32), uint32(uint64(id))
}

// KeyIDSQL is a query that computes KeyID($1 namespace, $2 key) on the
// server, for SQL code and operators:
//
//	SELECT pg_try_advisory_lock((<KeyIDSQL with the two values>));
const KeyIDSQL = `SELECT ('x' || left(encode(sha256(
	int4send(octet_length(convert_to($1::text, 'UTF8'))) || convert_to($1::text, 'UTF8') ||
	int4send(octet_length(convert_to($2::text, 'UTF8'))) || convert_to($2::text, 'UTF8')), 'hex'), 16))::bit(64)::bigint`
