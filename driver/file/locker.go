//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/mutexkit/mutexkit/driver"
)

// maxReplacedRetries bounds how often one attempt starts over when the lock
// file is replaced between opening and locking it (only under tampering).
const maxReplacedRetries = 8

var errReplaced = errors.New("lock file replaced during the attempt")

// Errors carry no key and no lock file name, which holds up to 64 bytes of
// the key: keys may hold customer data, and errors end up in logs. Errors
// about a lock file name the directory and lockFileDesc instead.
var (
	errHeldHere        = fmt.Errorf("file: held by another owner in this client: %w", driver.ErrLocked)
	errLockedElsewhere = fmt.Errorf("file: lock file held by another process or client: %w", driver.ErrLocked)
	errNotHeld         = fmt.Errorf("file: %w", driver.ErrNotHeld)
)

// locker is one client's Locker: the keys it holds, each with its open lock
// file, and the wake channels of its waiters.
type locker struct {
	dir       string
	heartbeat time.Duration

	mu          sync.Mutex
	closed      bool
	held        map[string]*hold                 // key -> grant
	watchers    map[string]map[*watcher]struct{} // file name -> registrations
	hbStop      chan struct{}                    // nil until the heartbeat starts
	notify      io.Closer                        // inotify file; nil if not started or unavailable
	notifyTried bool
	wg          sync.WaitGroup // background goroutines
}

type watcher struct{ ch chan<- struct{} }

func (w *watcher) send() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// hold is one granted key.
type hold struct {
	key    string
	owner  driver.Owner
	name   string
	path   string
	lockF  *os.File // O_RDONLY: carries the flock
	rwF    *os.File // O_RDWR: writes the token; its close signals the release
	id     fileID   // the locked inode
	grant  driver.Grant
	onLost func(error)
}

// close releases the flock, then closes the writable fd: watchers that see
// its IN_CLOSE_WRITE find the key already free.
func (h *hold) close() {
	h.lockF.Close()
	if h.rwF != nil {
		h.rwF.Close()
	}
}

type fileID struct{ dev, ino uint64 }

func idOf(fi fs.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}
	}
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}
}

func newLocker(dir string, heartbeat time.Duration) *locker {
	return &locker{
		dir:       dir,
		heartbeat: heartbeat,
		held:      make(map[string]*hold),
		watchers:  make(map[string]map[*watcher]struct{}),
	}
}

func errClosed() error { return fmt.Errorf("file: locker: %w", driver.ErrClosed) }

// lockFileDesc stands for a lock file's name in errors.
const lockFileDesc = "<a key's lock file>"

// keyFree returns err, from an os call on a lock file, with the file's name
// left out: a *fs.PathError names the directory and lockFileDesc instead,
// and keeps Op and Err, so errors.Is(err, fs.ErrPermission) and errors.As
// to *fs.PathError still work. Other errors are returned as they are.
func keyFree(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return &fs.PathError{Op: pe.Op, Path: filepath.Join(filepath.Dir(pe.Path), lockFileDesc), Err: pe.Err}
	}
	return err
}

// checkDir checks that dir is a directory on a filesystem fit for flock.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("file: lock directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("file: %s is not a directory: %w", dir, driver.ErrInvalid)
	}
	return checkFS(dir)
}

// Acquire makes one non-blocking flock attempt; a blocking flock could not
// be cancelled.
func (l *locker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	if err := ctx.Err(); err != nil {
		return driver.Grant{}, err
	}
	if req.Key == "" {
		return driver.Grant{}, fmt.Errorf("file: empty key: %w", driver.ErrInvalid)
	}
	if req.Owner.IsZero() {
		return driver.Grant{}, fmt.Errorf("file: zero owner: %w", driver.ErrInvalid)
	}
	if g, err, done := l.heldBy(req); done {
		return g, err
	}
	name := FileName(req.Key)
	var h *hold
	for attempt := 0; ; attempt++ {
		var err error
		h, err = lockFile(l.dir, name)
		if err == nil {
			break
		}
		if errors.Is(err, driver.ErrLocked) {
			// A concurrent attempt of the same owner may hold it: that
			// grant is this attempt's own.
			if g, err2, done := l.heldBy(req); done {
				return g, err2
			}
			return driver.Grant{}, err
		}
		if !errors.Is(err, errReplaced) {
			return driver.Grant{}, err
		}
		if attempt == maxReplacedRetries {
			return driver.Grant{}, fmt.Errorf("file: a lock file in %s keeps being replaced: %w", l.dir, driver.ErrUnavailable)
		}
	}
	token, err := nextToken(h.rwF, req.Holder)
	if err != nil {
		h.close()
		return driver.Grant{}, fmt.Errorf("file: fencing token of a lock file in %s: %w", l.dir, err)
	}
	h.key, h.owner, h.name = req.Key, req.Owner, name
	h.grant = driver.Grant{Token: token}
	h.onLost = req.OnLost

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		h.close()
		return driver.Grant{}, errClosed()
	}
	// We hold the flock on the file the path names now, so an older grant
	// of this key here is on a removed or replaced file: it is lost.
	stale := l.held[req.Key]
	if stale != nil {
		stale.close()
	}
	l.held[req.Key] = h
	if l.hbStop == nil {
		l.hbStop = make(chan struct{})
		l.wg.Add(1)
		go l.heartbeatLoop(l.hbStop)
	}
	l.mu.Unlock()
	if stale != nil && stale.onLost != nil {
		stale.onLost(lostError(l.dir))
	}
	return h.grant, nil
}

// heldBy reports (done=true) the outcome for a key this Locker already
// holds, or that it is closed.
func (l *locker) heldBy(req driver.AcquireRequest) (driver.Grant, error, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return driver.Grant{}, errClosed(), true
	}
	h := l.held[req.Key]
	switch {
	case h == nil:
		return driver.Grant{}, nil, false
	case h.owner == req.Owner:
		return h.grant, nil, true
	default:
		return driver.Grant{}, errHeldHere, true
	}
}

// lockFile takes the flock on the lock file name in dir. Attempts open the
// file read-only (flock needs no write access), so a failed attempt's close
// is no IN_CLOSE_WRITE and does not wake other waiters; only the winner
// opens it read-write. Errors name dir, never the file (see keyFree).
func lockFile(dir, name string) (*hold, error) {
	path := filepath.Join(dir, name)
	lf, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|openFlags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("file: open lock file: %w", keyFree(err))
	}
	if fi, err := lf.Stat(); err != nil || !fi.Mode().IsRegular() {
		lf.Close()
		return nil, fmt.Errorf("file: a lock file in %s is not a regular file: %w", dir, driver.ErrInvalid)
	}
	if err := flock(lf, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EAGAIN) {
			return nil, errLockedElsewhere
		}
		return nil, fmt.Errorf("file: flock a lock file in %s: %w", dir, keyFree(err))
	}
	lfi, err := lf.Stat()
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("file: %w", keyFree(err))
	}
	id := idOf(lfi)
	// Opening by path again also checks that the path still names the
	// inode we locked: if it was removed or replaced after our open, our
	// flock excludes no one.
	rw, err := os.OpenFile(path, os.O_RDWR|openFlags, 0)
	if err != nil {
		lf.Close()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errReplaced
		}
		return nil, fmt.Errorf("file: open lock file for writing: %w", keyFree(err))
	}
	h := &hold{lockF: lf, rwF: rw, id: id, path: path}
	rfi, err := rw.Stat()
	if err != nil {
		h.close()
		return nil, fmt.Errorf("file: %w", keyFree(err))
	}
	if idOf(rfi) != id {
		h.close()
		return nil, errReplaced
	}
	return h, nil
}

// openFlags guard against what another user may plant in a shared
// directory (the default is under $TMPDIR): a symlink would make us write
// tokens into its target, and opening a FIFO read-only would block.
const openFlags = syscall.O_NOFOLLOW | syscall.O_NONBLOCK

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Flock(int(fd), how)
			if ferr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// maxLockFile bounds what is read of a lock file: a token line and a
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

func lostError(dir string) error {
	return fmt.Errorf("file: a lock file in %s was removed or replaced, so the lock no longer excludes anyone: %w", dir, driver.ErrNotHeld)
}

// Release closes the key's lock file, which releases the flock, and wakes
// this Locker's waiters; other processes' waiters see the close through
// inotify. It returns an error matching driver.ErrNotHeld if the lock file
// was removed or replaced meanwhile. ctx is not consulted: releasing cannot block, and giving up a
// release would leave the key held.
func (l *locker) Release(ctx context.Context, key string, owner driver.Owner) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed()
	}
	h := l.held[key]
	if h == nil || h.owner != owner {
		return errNotHeld
	}
	// A release can come before the heartbeat finds a removed or replaced
	// lock file: the grant was lost, and the caller must hear so. Check
	// before closing: a closed, unlinked inode's number can be reused.
	lost := replaced(h)
	delete(l.held, key)
	h.close()
	l.wakeLocked(h.name)
	if lost {
		return lostError(l.dir)
	}
	return nil
}

// Renew: grants do not expire (Validity 0), so package mutex never renews.
func (l *locker) Renew(ctx context.Context, batch []driver.Renewal) {
	for i := range batch {
		batch[i].Err = fmt.Errorf("file: grants do not expire and need no renewal: %w", driver.ErrUnimplemented)
	}
}

// Watch wakes wake when key's holder, in any process, releases it (or dies).
// On Linux this uses one inotify instance per Locker; where inotify is
// unavailable only releases by this Locker wake it, and package mutex's
// polling covers the rest.
func (l *locker) Watch(key string, wake chan<- struct{}) (func(), error) {
	if wake == nil {
		return nil, fmt.Errorf("file: nil wake channel: %w", driver.ErrInvalid)
	}
	name := FileName(key)
	w := &watcher{ch: wake}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed()
	}
	if !l.notifyTried {
		// Started synchronously, so a release after Watch returns is seen.
		l.notifyTried = true
		l.startNotifyLocked()
	}
	set := l.watchers[name]
	if set == nil {
		set = make(map[*watcher]struct{})
		l.watchers[name] = set
	}
	set[w] = struct{}{}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if set := l.watchers[name]; set != nil {
				delete(set, w)
				if len(set) == 0 {
					delete(l.watchers, name)
				}
			}
		})
	}
	return stop, nil
}

func (l *locker) wakeLocked(name string) {
	for w := range l.watchers[name] {
		w.send()
	}
}

func (l *locker) wakeAllLocked() {
	for _, set := range l.watchers {
		for w := range set {
			w.send()
		}
	}
}

// Ping checks that the directory exists, is writable and is not on a
// network filesystem.
func (l *locker) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return errClosed()
	}
	if err := checkDir(l.dir); err != nil {
		return err
	}
	const wOK, xOK = 2, 1 // access(2) modes, the same on every Unix
	if err := syscall.Access(l.dir, wOK|xOK); err != nil {
		return fmt.Errorf("file: lock directory not writable: %w", &os.PathError{Op: "access", Path: l.dir, Err: err})
	}
	return nil
}

// Close releases every held key, stops the heartbeat and the inotify
// reader, and waits for them.
func (l *locker) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errClosed()
	}
	l.closed = true
	holds := l.held
	l.held = nil
	if l.hbStop != nil {
		close(l.hbStop)
	}
	notify := l.notify
	l.notify = nil
	// Waiters try again at once and learn that the Locker is closed.
	l.wakeAllLocked()
	l.watchers = nil
	l.mu.Unlock()

	for _, h := range holds {
		h.close()
	}
	if notify != nil {
		notify.Close() // ends the reader's blocked Read
	}
	l.wg.Wait()
	return nil
}

// heartbeatLoop reports grants whose lock file was removed or replaced:
// the flock is on an inode no one else will open, so it excludes no one.
func (l *locker) heartbeatLoop(stop <-chan struct{}) {
	defer l.wg.Done()
	t := time.NewTicker(l.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			l.checkHeld()
		}
	}
}

func (l *locker) checkHeld() {
	l.mu.Lock()
	holds := make([]*hold, 0, len(l.held))
	for _, h := range l.held {
		holds = append(holds, h)
	}
	l.mu.Unlock()
	for _, h := range holds {
		if !replaced(h) {
			continue
		}
		l.mu.Lock()
		if l.held[h.key] != h { // released or closed meanwhile
			l.mu.Unlock()
			continue
		}
		delete(l.held, h.key)
		h.close()
		l.wakeLocked(h.name)
		l.mu.Unlock()
		if h.onLost != nil {
			h.onLost(lostError(l.dir))
		}
	}
}

// replaced reports whether h's path no longer names the inode h locked. An
// open inode cannot be reused, so equal dev and ino mean the same file.
// Errors other than a missing file (EIO, EACCES) are not taken for a loss.
func replaced(h *hold) bool {
	fi, err := os.Lstat(h.path) // a symlink put in its place is a replacement
	if err != nil {
		return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
	}
	return idOf(fi) != h.id
}
