package core

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Idle sessions hold no copy buffer.
//
// A heap profile of the relay with 1000 tunnels (scripts/bench --profile)
// had most of its heap in the two 32 KiB io.Copy buffers each session held
// for its whole life, mostly while blocked waiting for the next bytes. The
// module → player direction now copies through wsserver.Conn's WriteTo,
// which takes a buffer once a message has arrived; the player → module
// direction copies through copyFromPlayer, which waits for the player's
// socket to become readable before it takes one. The module does the same
// (modules/rtsptunnel/internal/tunnel/poolread.go).

// copyBufSize is the player → module copy buffer; a read fills at most one
// websocket message.
const copyBufSize = 32 << 10

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyFromPlayer copies player to dst until player's EOF (nil error) or a
// failure, like io.Copy. For a connection with a file descriptor the buffer
// comes from a pool once data is there, and goes back after each write.
func copyFromPlayer(dst io.Writer, player net.Conn) (int64, error) {
	sc, ok := player.(syscall.Conn)
	if !ok {
		return io.Copy(dst, player)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return io.Copy(dst, player)
	}
	r := &rawReader{raw: raw}
	r.readFD = r.tryRead // bound once: a method value per read would allocate
	var total int64
	for {
		bp, n, rerr := r.read()
		if n > 0 {
			m, werr := dst.Write((*bp)[:n])
			total += int64(m)
			if werr != nil {
				copyBufPool.Put(bp)
				return total, werr
			}
		}
		if bp != nil {
			copyBufPool.Put(bp)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// rawReader reads a connection through its file descriptor, taking a
// buffer from copyBufPool only when data is there. One goroutine reads at a
// time.
type rawReader struct {
	raw    syscall.RawConn
	readFD func(fd uintptr) bool // r.tryRead

	// The result of the read in progress, set by tryRead.
	bp  *[]byte
	n   int
	err error
}

// read returns the next bytes in a pooled buffer (nil when none was taken),
// io.EOF at the end, or the error; RawConn.Read reports deadlines and a
// closed connection while it waits.
func (r *rawReader) read() (bp *[]byte, n int, err error) {
	// RawConn.Read calls readFD, and while it returns false waits for
	// readability and calls it again: net.Conn.Read's own loop.
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
		r.bp = copyBufPool.Get().(*[]byte)
	}
	for {
		m, e := syscall.Read(int(fd), *r.bp)
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			copyBufPool.Put(r.bp) // wait without a buffer
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
