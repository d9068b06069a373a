package file

import (
	"testing"

	"github.com/mutexkit/mutexkit/driver"
)

// FromDirWithoutNotify is FromDir without inotify, as on systems that lack
// it: Renew alone finds losses, and Watch wakes on this Locker's own
// releases only.
func FromDirWithoutNotify(dir string) driver.Connector {
	return &connector{dir: dir, noNotify: true}
}

// SetLink replaces the link(2) that makes a queue's mark, until t ends.
func SetLink(t testing.TB, link func(oldname, newname string) error) {
	old := linkFile
	linkFile = link
	t.Cleanup(func() { linkFile = old })
}
