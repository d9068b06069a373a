package mysql

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// LockName is the MySQL user-level lock name of key in namespace: what
// GET_LOCK takes. It is at most 64 characters, ASCII, and made of
//
//	"mk/" + prefix + "/" + hash
//
// where prefix is the longest beginning of key, of at most 28 bytes, made
// only of the bytes A-Z a-z 0-9 _ . : - (so an operator reading
// IS_USED_LOCK or the process list can tell keys apart), and hash is the
// first 32 hex digits (128 bits) of SHA-256 over the namespace's length in
// bytes (decimal), ":", the namespace, and the key. Distinct (namespace,
// key) pairs get distinct names: the hash covers both, whole, and the
// length keeps ("a", "bc") apart from ("ab", "c"). The prefix only
// decorates. LockNameSQL computes the same name in SQL, so a SQL user can
// take the lock a Mutex takes, and be excluded by it.
//
// The prefix shows the key's beginning to anyone who may list the server's
// locks (MySQL's performance_schema.metadata_locks, MariaDB's
// METADATA_LOCK_INFO): keep customer data out of keys,
// or hash it into them yourself. Every client of a key, and every SQL
// user, must use the same namespace: a different one is a different lock.
func LockName(namespace, key string) string {
	h := sha256.New()
	h.Write(strconv.AppendInt(nil, int64(len(namespace)), 10))
	h.Write([]byte{':'})
	h.Write([]byte(namespace))
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	b := make([]byte, 0, 64)
	b = append(b, "mk/"...)
	for i := 0; i < len(key) && i < maxPrefix && readable(key[i]); i++ {
		b = append(b, key[i])
	}
	b = append(b, '/')
	b = hex.AppendEncode(b, sum[:16])
	return string(b)
}

// LockNameSQL computes LockName in SQL (MariaDB 10.0.5+, MySQL 8.0+): a
// query of one row and column taking the namespace and the key as its two
// parameters, in that order. A SQL user takes the lock a Mutex of that key
// takes, and is excluded by it, with
//
//	SELECT GET_LOCK((<LockNameSQL>), 10)
//
// (or SET @name = (<LockNameSQL>) and GET_LOCK(@name, 10)).
const LockNameSQL = `SELECT CONCAT('mk/', IFNULL(CONVERT(REGEXP_SUBSTR(CAST(k AS CHAR CHARACTER SET latin1), '^[A-Za-z0-9_.:-]{0,28}') USING utf8mb4), ''), '/',
	LEFT(SHA2(CONCAT(LENGTH(ns), ':', ns, k), 256), 32)) FROM (SELECT CAST(? AS BINARY) AS ns, CAST(? AS BINARY) AS k) p`

// maxPrefix is the longest key prefix a lock name shows: 3 + 28 + 1 + 32
// is MySQL's 64.
const maxPrefix = 28

func readable(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '.' || c == ':' || c == '-'
}
