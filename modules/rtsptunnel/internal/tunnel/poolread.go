package tunnel

import (
	"io"
	"net"
	"os"
	"syscall"
)

// Idle tunnels hold no copy buffer.
//
// A tunnel spends most of its life waiting: for the camera's next packet and
// for the remote's next message. A heap profile of the module with 1000 idle
// tunnels (scripts/bench --profile) showed three quarters of the heap in the
// two 32 KiB copy buffers each tunnel held while blocked in those waits
// (64 KiB per tunnel). The remote's side now takes its buffer when a message
// has arrived (remoteToCamera), and the camera's side reads through
// poolReader, which takes a buffer only when the camera has data.

// poolReader returns a function that reads c's next bytes into a buffer from
// bufPool and returns it (nil when none was needed); the caller puts it back.
// For a connection with a file descriptor (the camera's TCP connection) the
// buffer is taken only once data is there: while waiting, none is held. It
// behaves like c.Read otherwise: io.EOF at the end, the read error, or
// net.ErrClosed when c is closed during the wait.
func poolReader(c net.Conn) func() (bp *[]byte, n int, err error) {
	var raw syscall.RawConn
	if sc, ok := c.(syscall.Conn); ok {
		raw, _ = sc.SyscallConn()
	}
	if raw == nil { // e.g. net.Pipe: hold the buffer through the wait
		return func() (*[]byte, int, error) {
			bp := bufPool.Get().(*[]byte)
			n, err := c.Read(*bp)
			return bp, n, err
		}
	}
	return func() (bp *[]byte, n int, err error) {
		// RawConn.Read calls the function, and while it returns false waits
		// for the descriptor to become readable and calls it again: the same
		// read-then-wait loop as net.Conn.Read, which also makes the first
		// attempt before any wait.
		werr := raw.Read(func(fd uintptr) bool {
			if bp == nil {
				bp = bufPool.Get().(*[]byte)
			}
			for {
				m, e := syscall.Read(int(fd), *bp)
				switch {
				case e == syscall.EINTR:
					continue
				case e == syscall.EAGAIN:
					bufPool.Put(bp) // wait without a buffer
					bp = nil
					return false
				case e != nil:
					err = os.NewSyscallError("read", e)
				case m == 0:
					err = io.EOF
				default:
					n = m
				}
				return true
			}
		})
		if werr != nil && err == nil {
			err = werr
		}
		return bp, n, err
	}
}
