//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/mutexkit/mutexkit/driver"
)

// locker is one client's Locker: the keys it holds, each with its open lock
// file, its owners' places in wait queues, and the wake channels of its
// waiters.
type locker struct {
	dir string

	mu          sync.Mutex
	closed      bool
	held        map[string]*hold                 // key -> grant
	queued      map[driver.Owner]*entry          // waiting owners' places (queue.go)
	byWD        map[int]*entry                   // inotify watch -> entry
	sweeping    bool                             // the sweeper runs (while queued is not empty)
	noLinks     bool                             // no queue can be marked in dir: waiters poll unqueued
	done        chan struct{}                    // closed by Close: stops the sweeper
	watchers    map[string]map[*watcher]struct{} // file name -> registrations
	notify      io.Closer                        // inotify file; nil if not started or unavailable
	notifyFD    int                              // its descriptor
	dirWD       int                              // its watch on dir
	notifyTried bool                             // set at the first grant, queued attempt or Watch; at once with inotify off
	wg          sync.WaitGroup                   // the inotify reader and the sweeper
}

type watcher struct {
	ch    chan<- struct{}
	owner driver.Owner
}

func (w *watcher) send() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// newLocker returns a Locker on dir; notify false leaves inotify off.
func newLocker(dir string, notify bool) *locker {
	return &locker{
		dir:         dir,
		held:        make(map[string]*hold),
		queued:      make(map[driver.Owner]*entry),
		byWD:        make(map[int]*entry),
		done:        make(chan struct{}),
		notifyFD:    -1,
		dirWD:       -1,
		watchers:    make(map[string]map[*watcher]struct{}),
		notifyTried: !notify,
	}
}

// Acquire makes one non-blocking flock attempt; a blocking flock could not
// be cancelled. A key with waiters in its queue is kept for the live one at
// the head: anyone else gets ErrLocked without trying the flock, and with
// req.Wait takes a place at the tail (or keeps its own).
func (l *locker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	if err := ctx.Err(); err != nil {
		return driver.Grant{}, err
	}
	name := FileName(req.Key)
	if g, err, done := l.heldBy(req); done {
		if err == errHeldHere {
			err = l.queueUp(ctx, req, name, false, true, err)
		}
		return g, err
	}
	path := filepath.Join(l.dir, name)
	var h *hold
	for attempt := 0; ; attempt++ {
		lf, queued, err := openLockFile(l.dir, path)
		if err != nil {
			return driver.Grant{}, err
		}
		// Checked before the flock, so that only the head (or, with nobody
		// waiting, anyone) ever takes it: a flock taken only to look at the
		// queue could make the head's attempt fail. With nobody waiting the
		// lock file is unmarked and there is nothing to look at.
		if queued {
			head, selfHead, err := queueHead(queueDir(l.dir, name), req.Owner)
			if err != nil {
				lf.Close()
				return driver.Grant{}, fmt.Errorf("file: read a wait queue in %s: %w", l.dir, queueFree(l.dir, err))
			}
			if head != "" && !selfHead {
				lf.Close()
				return driver.Grant{}, l.queueUp(ctx, req, name, false, true, errKept)
			}
		}
		h, err = lockOpened(l.dir, path, lf)
		if err == nil {
			break
		}
		if errors.Is(err, driver.ErrLocked) {
			// A concurrent attempt of the same owner may hold it: that
			// grant is this attempt's own.
			if g, err2, done := l.heldBy(req); done && err2 != errHeldHere {
				return g, err2
			}
			return driver.Grant{}, l.queueUp(ctx, req, name, true, queued, err)
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
	served := l.queued[req.Owner]
	if served != nil {
		l.dropEntryLocked(served)
	}
	l.startNotifyOnceLocked() // reports a removed or replaced lock file at once
	l.mu.Unlock()
	if served != nil {
		clearQueue(served.qdir)
	}
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

// Release closes the key's lock file, which releases the flock, and wakes
// the live waiter at the head of the key's queue (through its entry), or,
// if nobody queues, this Locker's watchers; other processes' watchers see
// the close through inotify. It returns an error matching driver.ErrNotHeld
// if the lock file was removed or replaced meanwhile. An owner that does
// not hold key but waits in its queue leaves it (and passes the key on if
// it was kept for it), and gets ErrNotHeld. ctx is not consulted: releasing
// cannot block, and giving up a release would leave the key held.
func (l *locker) Release(ctx context.Context, key string, owner driver.Owner) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errClosed()
	}
	h := l.held[key]
	if h == nil || h.owner != owner {
		e := l.queued[owner]
		l.mu.Unlock()
		if e != nil && e.key == key {
			l.leaveQueue(e)
		}
		return errNotHeld
	}
	// A release can come before a Renew finds a removed or replaced lock
	// file: the grant was lost, and the caller must hear so. A check that
	// cannot tell is no loss. Check before closing: a closed, unlinked
	// inode's number can be reused.
	lost, queued, _ := h.replaced()
	delete(l.held, key)
	h.close()
	l.wakeLocked(h.name)
	l.mu.Unlock()
	if queued || lost {
		l.passOn(queueDir(l.dir, h.name))
	}
	if lost {
		return lostError(l.dir)
	}
	return nil
}

// Renew verifies each grant (a TTL is ignored: grants do not expire): the
// key's path must still name the lock file this Locker locked. A removed or
// replaced lock file excludes no one, so its grant is dropped and reported
// with ErrNotHeld; a check that fails (EACCES, EIO) leaves the outcome
// unknown. The checks run under the Locker's mutex, so a concurrent Release
// cannot close the file, and free its inode number, during one.
func (l *locker) Renew(ctx context.Context, batch []driver.Renewal) {
	if err := ctx.Err(); err != nil {
		for i := range batch {
			batch[i].Err = err
		}
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range batch {
		r := &batch[i]
		r.Validity, r.Err = 0, nil
		h := l.held[r.Key]
		switch {
		case l.closed:
			r.Err = errClosed()
			continue
		case h == nil || h.owner != r.Owner:
			r.Err = errNotHeld
			continue
		}
		lost, _, err := h.replaced()
		switch {
		case err != nil:
			r.Err = fmt.Errorf("file: verify a lock file in %s: %w", l.dir, keyFree(err))
		case lost:
			l.dropLocked(h)
			r.Err = lostError(l.dir)
		}
	}
}

// dropLocked forgets a lost grant and closes its lock file. Callers hold mu.
func (l *locker) dropLocked(h *hold) {
	delete(l.held, h.key)
	h.close()
	l.wakeLocked(h.name)
}

// Watch wakes wake when owner's next attempt on key may succeed. While
// owner waits in key's queue, that is when a release finds it at the head
// (one release wakes one waiter), or when the holder dies while owner is at
// the head; otherwise, when key's holder, in any process, releases it (or
// dies). On Linux this uses one inotify instance per Locker; where inotify
// is unavailable (other systems, fs.inotify.max_user_instances reached) it
// returns an error matching driver.ErrUnimplemented, and package mutex
// polls.
func (l *locker) Watch(key string, owner driver.Owner, wake chan<- struct{}) (func(), error) {
	name := FileName(key)
	w := &watcher{ch: wake, owner: owner}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed()
	}
	// Started synchronously, so a release after Watch returns is seen.
	l.startNotifyOnceLocked()
	if l.notify == nil {
		// Only this Locker's releases could be signalled: package mutex
		// then polls, sooner than it does behind a Watch.
		return nil, errNoWatch
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

// startNotifyOnceLocked starts the inotify reader on the first grant or
// Watch. Callers hold mu.
func (l *locker) startNotifyOnceLocked() {
	if !l.notifyTried {
		l.notifyTried = true
		l.startNotifyLocked()
	}
}

// wakeLocked wakes the watchers of lock file name on its release: all but
// owners queued behind others, whom the release wakes in turn through
// their entries.
func (l *locker) wakeLocked(name string) {
	for w := range l.watchers[name] {
		if e := l.queued[w.owner]; e == nil || e.lockName != name || e.head {
			w.send()
		}
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

// Close releases every held key, stops the inotify reader and waits for
// it. A second Close returns nil.
func (l *locker) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	holds := l.held
	l.held = nil
	var queues []string
	for _, e := range l.queued {
		l.dropEntryLocked(e)
		queues = append(queues, e.qdir) // passOn clears it if empty
	}
	close(l.done)
	notify := l.notify
	l.notify = nil
	// Waiters try again at once and learn that the Locker is closed.
	l.wakeAllLocked()
	l.watchers = nil
	l.mu.Unlock()

	for _, h := range holds {
		h.close()
		queues = append(queues, queueDir(l.dir, h.name))
	}
	for _, qdir := range queues {
		l.passOn(qdir) // best effort: waiters poll too
	}
	if notify != nil {
		notify.Close() // ends the reader's blocked Read
	}
	l.wg.Wait()
	return nil
}
