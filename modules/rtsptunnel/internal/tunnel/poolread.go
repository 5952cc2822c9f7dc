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
	r := &rawReader{raw: raw}
	// Bound once: a closure or method value made per read would be a heap
	// allocation per camera packet (a profile at 1000 tunnels showed it).
	r.readFD = r.tryRead
	return r.read
}

// rawReader is poolReader's state for a connection with a file descriptor.
// One goroutine reads at a time.
type rawReader struct {
	raw    syscall.RawConn
	readFD func(fd uintptr) bool // r.tryRead

	// The result of the read in progress, set by tryRead.
	bp  *[]byte
	n   int
	err error
}

func (r *rawReader) read() (bp *[]byte, n int, err error) {
	// RawConn.Read calls readFD, and while it returns false waits for the
	// descriptor to become readable and calls it again: the same
	// read-then-wait loop as net.Conn.Read, which also makes the first
	// attempt before any wait.
	werr := r.raw.Read(r.readFD)
	bp, n, err = r.bp, r.n, r.err
	r.bp, r.n, r.err = nil, 0, nil
	if werr != nil && err == nil {
		err = werr
	}
	return bp, n, err
}

// tryRead makes one read attempt; false means "wait for readability".
func (r *rawReader) tryRead(fd uintptr) bool {
	if r.bp == nil {
		r.bp = bufPool.Get().(*[]byte)
	}
	for {
		m, e := syscall.Read(int(fd), *r.bp)
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			bufPool.Put(r.bp) // wait without a buffer
			r.bp = nil
			return false
		case e != nil:
			r.err = os.NewSyscallError("read", e)
		case m == 0:
			r.err = io.EOF
		default:
			r.n = m
		}
		return true
	}
}
