//go:build unix

package certfile

import (
	"os"
	"syscall"
)

// fileID returns the device and inode of fi.
func fileID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		// The conversions are needed: the field types differ between platforms.
		return uint64(st.Dev), uint64(st.Ino)
	}
	return 0, 0
}
