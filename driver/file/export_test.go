package file

import "github.com/mutexkit/mutexkit/driver"

// FromDirWithoutNotify is FromDir without inotify, as on systems that lack
// it: Renew alone finds losses, and Watch wakes on this Locker's own
// releases only.
func FromDirWithoutNotify(dir string) driver.Connector {
	return &connector{dir: dir, noNotify: true}
}
