package file

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWatchEntryOwnWatch: an entry's watch neither follows a symlink (to
// the lock directory, whose watch it would take over: it watches the link)
// nor changes a watch this Locker has on the same inode (refused: the
// waiter polls).
func TestWatchEntryOwnWatch(t *testing.T) {
	dir := t.TempDir()
	l := newLocker(dir, true)
	defer l.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.startNotifyOnceLocked()
	if l.notify == nil {
		t.Skip("no inotify")
	}
	link := filepath.Join(t.TempDir(), "x.w")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if wd := l.watchEntryLocked(link); wd == l.dirWD {
		t.Fatalf("watch of a symlink to the directory is the directory's (%d): its mask was replaced", wd)
	}
	path := filepath.Join(dir, "x.w")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wd := l.watchEntryLocked(path)
	if wd < 0 || wd == l.dirWD {
		t.Fatalf("watch of an entry: %d (directory's %d)", wd, l.dirWD)
	}
	l.byWD[wd] = &entry{wd: wd}
	if again := l.watchEntryLocked(path); again != -1 {
		t.Fatalf("second watch of one inode: %d, want -1 (first %d)", again, wd)
	}
}
