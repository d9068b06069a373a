package redlock

import (
	"strconv"
	"strings"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// A lock key's value is its holder record, so that a grant writes one key
// and Inspect reads one:
//
//	<owner: 32 hex digits> <token> <since: unix ms> <pid> <attempt> <host>
//
// The owner comes first and at a fixed width: the scripts compare those 32
// bytes alone. The token is 0 unless the grant was fenced (the fenced
// acquire script writes it in place of the 0 the client sends). The host
// comes last, so that whatever it holds cannot shift the other fields.
// The attempt number, new for every acquire a Locker makes, tells apart
// the records of two attempts of one owner (a retry keeps the owner, and
// "since" may repeat): a late release of a failed attempt, which compares
// the whole record, can then never delete the retry's grant.
const ownerLen = 2 * len(driver.Owner{})

// record returns the holder record of attempt's grant to owner, with
// token 0.
func record(owner driver.Owner, attempt uint64, h driver.Holder) string {
	var since int64
	if !h.Since.IsZero() {
		since = h.Since.UnixMilli()
	}
	var num [20]byte
	var b strings.Builder
	b.Grow(ownerLen + 3 + 2*len(num) + 1 + len(h.Host))
	writeOwnerHex(&b, owner)
	b.WriteString(" 0 ")
	b.Write(strconv.AppendInt(num[:0], since, 10))
	b.WriteByte(' ')
	b.Write(strconv.AppendInt(num[:0], int64(h.PID), 10))
	b.WriteByte(' ')
	b.Write(strconv.AppendUint(num[:0], attempt, 10))
	b.WriteByte(' ')
	b.WriteString(h.Host)
	return b.String()
}

// withToken returns rec as the scripts store it for a grant of token:
// the token in place of rec's 0.
func withToken(rec string, token int64) string {
	if token == 0 {
		return rec
	}
	return rec[:ownerLen+1] + strconv.FormatInt(token, 10) + rec[ownerLen+2:]
}

// parseRecord reads a holder record. It returns the owner's hex digits and
// what it can read of the rest; a value of another layout gives an empty
// Holder rather than an error, since the key is held all the same.
func parseRecord(v string) (owner string, h driver.Holder) {
	if len(v) < ownerLen {
		return v, h
	}
	owner = v[:ownerLen]
	fields := strings.SplitN(v[ownerLen:], " ", 6) // "", token, since, pid, attempt, host
	if len(fields) != 6 || fields[0] != "" {
		return owner, h
	}
	h.Token, _ = strconv.ParseUint(fields[1], 10, 64)
	if ms, err := strconv.ParseInt(fields[2], 10, 64); err == nil && ms > 0 {
		h.Since = time.UnixMilli(ms)
	}
	h.PID, _ = strconv.Atoi(fields[3])
	h.Host = fields[5]
	return owner, h
}

// writeOwnerHex writes owner in lower-case hex (ownerLen bytes) to b, with
// no allocation of its own.
func writeOwnerHex(b *strings.Builder, owner driver.Owner) {
	const digits = "0123456789abcdef"
	for _, c := range owner {
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&0x0f])
	}
}
