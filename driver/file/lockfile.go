//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/mutexkit/mutexkit/driver"
)

// holder line.
const maxLockFile = 512

// The lock file holds two lines: the last fencing token in decimal, and the
// holder that took it ("host pid since", since in Unix nanoseconds), which
// Inspect reports. An empty file holds token 0.

// nextToken reads the fencing token in the lock file, writes the next one
// with the holder's line and syncs it, so tokens survive a machine crash
// too. The caller holds the flock.
func nextToken(f *os.File, who driver.Holder) (uint64, error) {
	last, _, err := readLockFile(f)
	if err != nil {
		return 0, err
	}
	if last == math.MaxUint64 {
		return 0, errors.New("fencing token exhausted")
	}
	next := last + 1
	content := fmt.Appendf(nil, "%d\n%s %d %d\n", next, holderHost(who.Host), who.PID, sinceNanos(who.Since))
	if _, err := f.WriteAt(content, 0); err != nil {
		return 0, fmt.Errorf("write fencing token: %w", keyFree(err))
	}
	if err := f.Truncate(int64(len(content))); err != nil {
		return 0, fmt.Errorf("write fencing token: %w", keyFree(err))
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("sync fencing token: %w", keyFree(err))
	}
	return next, nil
}

// readLockFile parses a lock file: the token, and the holder as far as the
// file records it.
func readLockFile(f *os.File) (uint64, driver.Holder, error) {
	buf := make([]byte, maxLockFile)
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return 0, driver.Holder{}, fmt.Errorf("read fencing token: %w", keyFree(err))
	}
	if n == 0 {
		return 0, driver.Holder{}, nil
	}
	tokenLine, rest, ok := strings.Cut(string(buf[:n]), "\n")
	token, err := strconv.ParseUint(tokenLine, 10, 64)
	if !ok || err != nil {
		return 0, driver.Holder{}, errors.New("lock file holds no valid fencing token")
	}
	var who driver.Holder
	if fields := strings.Fields(rest); len(fields) == 3 {
		who.Host = fields[0]
		who.PID, _ = strconv.Atoi(fields[1])
		if ns, err := strconv.ParseInt(fields[2], 10, 64); err == nil && ns > 0 {
			who.Since = time.Unix(0, ns)
		}
	}
	if who.Host == "-" {
		who.Host = ""
	}
	who.Token = token
	return token, who, nil
}

// holderHost makes a host name safe for the holder line: one field, bounded.
func holderHost(host string) string {
	host = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return '_'
		}
		return r
	}, host)
	if len(host) > 255 {
		host = host[:255]
	}
	if host == "" {
		return "-"
	}
	return host
}

func sinceNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
