package file

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxPrefix bounds the readable part of a lock file name, in bytes.
const maxPrefix = 64

// FileName returns the name, inside the lock directory, of the lock file for
// key. It is
//
//	<prefix>-<hash>.lock   or   <hash>.lock when the prefix is empty
//
// where hash is the first 128 bits of SHA-256(key) in lowercase hex (32
// digits), which makes distinct keys share a file only by a hash collision,
// and prefix is a readable, cosmetic rendering of the key: each run of
// characters outside [A-Za-z0-9._-] becomes one '_', leading '.' and '-'
// are dropped, and it is cut to 64 bytes.
//
// The name never contains '/' or NUL, never starts with '.' and is at most
// 102 bytes, so whatever the key ("../x", "/etc/passwd", NUL bytes, 4 KiB of
// unicode) the file stays inside the directory and within NAME_MAX. The
// mapping is stable: changing it would let two versions lock different
// files for one key.
func FileName(key string) string {
	sum := sha256.Sum256([]byte(key))
	prefix := sanitize(key)
	var b strings.Builder
	b.Grow(len(prefix) + 1 + 32 + len(".lock"))
	if prefix != "" {
		b.WriteString(prefix)
		b.WriteByte('-')
	}
	b.WriteString(hex.EncodeToString(sum[:16]))
	b.WriteString(".lock")
	return b.String()
}

func sanitize(key string) string {
	var b strings.Builder
	replaced := false
	for i := 0; i < len(key) && b.Len() < maxPrefix; i++ {
		c := key[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-' || c == '.'
		switch {
		case ok && b.Len() == 0 && (c == '.' || c == '-'):
			// No hidden files, nothing a shell takes for an option.
		case ok:
			b.WriteByte(c)
			replaced = false
		case b.Len() > 0 && !replaced:
			b.WriteByte('_')
			replaced = true
		}
	}
	return b.String()
}
