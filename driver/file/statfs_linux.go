package file

import (
	"fmt"
	"os"
	"syscall"

	"github.com/mutexkit/mutexkit/driver"
)

// checkFS refuses a directory on a network filesystem, with an error
// matching driver.ErrUnimplemented.
func checkFS(dir string) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("file: %w", &os.PathError{Op: "statfs", Path: dir, Err: err})
	}
	magic := uint32(st.Type) // int64, int32 or uint32 by arch; magics fit 32 bits
	if name, refused := networkFS(magic); refused {
		return fmt.Errorf("file: %s is on %s (statfs magic %#x), where flock does not exclude processes on other hosts; use a local directory: %w",
			dir, name, magic, driver.ErrUnimplemented)
	}
	return nil
}
