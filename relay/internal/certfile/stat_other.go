//go:build !unix

package certfile

import "os"

// fileID returns zeros where os.FileInfo carries no inode: changes are then
// found by modification time and size only.
func fileID(os.FileInfo) (dev, ino uint64) { return 0, 0 }
