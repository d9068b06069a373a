package file

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mutexkit/mutexkit/driver"
)

// Inspect reports whether key's lock file carries a flock, as the kernel
// lists in /proc/locks, and the holder its lock file records. It takes no
// lock itself: a probe with flock would make a concurrent attempt fail.
func (l *locker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	if err := ctx.Err(); err != nil {
		return driver.Holder{}, false, err
	}
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return driver.Holder{}, false, errClosed()
	}
	f, err := os.OpenFile(filepath.Join(l.dir, FileName(key)), os.O_RDONLY|openFlags, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return driver.Holder{}, false, nil // never locked
	}
	if err != nil {
		return driver.Holder{}, false, fmt.Errorf("file: inspect: %w", keyFree(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return driver.Holder{}, false, fmt.Errorf("file: inspect: %w", keyFree(err))
	}
	pid, held, err := flockHolder(idOf(fi))
	if err != nil || !held {
		return driver.Holder{}, false, err
	}
	_, who, err := readLockFile(f)
	if err != nil { // caught mid-write by an acquire: held, holder unknown
		who = driver.Holder{}
	}
	if who.PID == 0 {
		who.PID = pid
	}
	return who, true, nil
}

// flockHolder finds an exclusive flock on the file id in /proc/locks and
// returns the pid the kernel lists for it.
func flockHolder(id fileID) (pid int, held bool, err error) {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0, false, fmt.Errorf("file: inspect: %w", driver.ErrUnimplemented)
	}
	defer f.Close()
	// The kernel prints MAJOR:MINOR:INODE, major and minor in hex.
	major := (id.dev>>8)&0xfff | (id.dev>>32)&^0xfff
	minor := id.dev&0xff | (id.dev>>12)&^0xff
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, id.ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 3800 fe:00:778396 0 EOF"
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[3] != "WRITE" || fields[5] != want {
			continue
		}
		pid, _ = strconv.Atoi(fields[4])
		return pid, true, nil
	}
	if err := sc.Err(); err != nil {
		return 0, false, fmt.Errorf("file: inspect: read /proc/locks: %w", err)
	}
	return 0, false, nil
}
