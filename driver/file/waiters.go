//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// queueUp ends an attempt that found the key held, or kept for another
// waiter, and returns locked. With req.Wait the owner takes a place at the
// tail of the key's queue, or keeps its place and records the attempt.
// head says that the attempt found the owner at the head (the key is held,
// not kept); marked, that it saw the lock file marked (or did not look).
// A place that cannot be made (a full disk, a read-only queue) leaves the
// owner unqueued: the attempt's outcome is still that the key is held, the
// owner still polls, and the others keep their places. If ctx ends while
// the attempt waits for the queue's flock, it returns an error matching
// ctx.Err(). A filesystem without hard links, found once, leaves every
// owner of the Locker unqueued.
func (l *locker) queueUp(ctx context.Context, req driver.AcquireRequest, name string, head, marked bool, locked error) error {
	if !req.Wait {
		return locked
	}
	now := time.Now()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errClosed()
	}
	if e := l.queued[req.Owner]; e != nil {
		if e.key == req.Key && e.touch() {
			e.last, e.head = now, head
			l.mu.Unlock()
			if !marked {
				// The lock file was replaced since the mark was made: the
				// queue is invisible on the new one until marked again.
				remarkQueue(e.qdir, filepath.Join(l.dir, name))
			}
			return locked
		}
		l.dropEntryLocked(e) // passed over (stale), or another key: a new place
		defer clearQueue(e.qdir)
	}
	noLinks := l.noLinks
	l.mu.Unlock()
	if noLinks {
		return locked
	}

	qdir := queueDir(l.dir, name)
	f, path, err := makeEntry(ctx, qdir, filepath.Join(l.dir, name), req.Owner)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return fmt.Errorf("file: wait for a wait queue in %s: %w", l.dir, err)
		}
		if errors.Is(err, errNoLinks) { // the filesystem's: not tried again
			l.mu.Lock()
			l.noLinks = true
			l.mu.Unlock()
		}
		return locked
	}
	e := &entry{key: req.Key, lockName: name, qdir: qdir, path: path, owner: req.Owner, f: f, wd: -1, last: now, head: head}
	l.mu.Lock()
	if l.closed || l.queued[req.Owner] != nil { // a concurrent attempt of the owner queued it
		closed := l.closed
		l.mu.Unlock()
		os.Remove(path)
		f.Close()
		clearQueue(qdir)
		if closed {
			return errClosed()
		}
		return locked
	}
	defer l.mu.Unlock()
	l.queued[req.Owner] = e
	l.startNotifyOnceLocked()
	if e.wd = l.watchEntryLocked(path); e.wd >= 0 {
		l.byWD[e.wd] = e
	}
	if !l.sweeping {
		l.sweeping = true
		l.wg.Add(1)
		go l.sweep()
	}
	return locked
}

// dropEntryLocked takes e out of its queue: a grant, a Release, Close, or
// QueueHold without an attempt. Callers hold mu, and after unlocking it
// call clearQueue(e.qdir) (or passOn, which clears an empty queue): the
// last one out removes the queue and its mark. Not under mu, which the
// inotify reader needs: that lists the directory.
func (l *locker) dropEntryLocked(e *entry) {
	delete(l.queued, e.owner)
	if e.wd >= 0 {
		delete(l.byWD, e.wd)
		l.unwatchEntryLocked(e.wd)
	}
	os.Remove(e.path) // before the flock goes, so no prober takes it for dead
	e.f.Close()
}

// leaveQueue takes e out of its queue for a Release by a waiter that gave
// up, and passes the key on if it was kept for e.
func (l *locker) leaveQueue(e *entry) {
	_, wasHead, _ := queueHead(e.qdir, e.owner)
	l.mu.Lock()
	dropped := l.queued[e.owner] == e
	if dropped {
		l.dropEntryLocked(e)
	}
	l.mu.Unlock()
	if wasHead {
		l.passOn(e.qdir) // clears the queue if empty
	} else if dropped {
		clearQueue(e.qdir)
	}
}

// passOn wakes the live waiter at the head of the queue qdir, after a
// release or when the waiter the key was kept for left. Dead waiters ahead
// of it are passed over (and removed) on the way.
func (l *locker) passOn(qdir string) {
	head, _, err := queueHead(qdir, driver.Owner{})
	if err != nil || head == "" {
		return
	}
	wakeEntry(filepath.Join(qdir, head))
}

// sweep drops the places of owners that made no attempt for QueueHold (a
// Lock that gave up without Release), while any are queued, and passes
// their keys on.
func (l *locker) sweep() {
	defer l.wg.Done()
	t := time.NewTicker(driver.QueueHold / 3)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		var queues []string
		l.mu.Lock()
		for _, e := range l.queued {
			if time.Since(e.last) >= driver.QueueHold {
				l.dropEntryLocked(e)
				queues = append(queues, e.qdir) // passOn clears it if empty
			}
		}
		idle := len(l.queued) == 0
		if idle {
			l.sweeping = false
		}
		l.mu.Unlock()
		for _, qdir := range queues {
			l.passOn(qdir)
		}
		if idle {
			return
		}
	}
}
