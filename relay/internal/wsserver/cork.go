package wsserver

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// One write per message.
//
// coder/websocket writes a frame header into a 4 KiB bufio.Writer and flushes
// it with the payload's first bytes before writing the rest, and crypto/tls
// then writes each record (16 KiB at most) with its own system call: a
// 32 KiB message left the relay in three writes. A profile of the relay under
// scripts/bench (up direction) had those writes as its largest cost. Each
// data message is now written with the connection under TLS corked: what TLS
// writes is collected and leaves in one write. The module does the same on
// its side (modules/rtsptunnel/internal/tunnel/coalesce.go).

// Listener returns ln with every accepted connection made corkable. Serve the
// websocket endpoint on it (under tls.NewListener when serving TLS) so that
// Conn can write each message in one system call.
func Listener(ln net.Listener) net.Listener { return corkListener{ln} }

type corkListener struct{ net.Listener }

func (l corkListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &corkConn{Conn: c}, nil
}

// corkConn is an accepted connection. While corked it collects what is
// written (TLS records) and passes it on in one write when uncorked.
// Uncorked, writes pass straight through. Its methods are safe for
// concurrent use: a pong or close frame written by another goroutine while
// corked joins the collected bytes, in order.
type corkConn struct {
	net.Conn

	mu     sync.Mutex
	corked bool    // guarded by mu
	held   *[]byte // guarded by mu; from heldPool while corked
}

// maxKept bounds the buffers heldPool keeps: a rare larger message does not
// pin its buffer.
const maxKept = 128 << 10

var heldPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	*c.held = append(*c.held, p...)
	return len(p), nil
}

// cork starts collecting writes.
func (c *corkConn) cork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = true
	c.held = heldPool.Get().(*[]byte)
}

// uncork writes what was collected and lets writes pass again.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	b := c.held
	c.held = nil
	defer func() {
		if cap(*b) <= maxKept {
			*b = (*b)[:0]
			heldPool.Put(b)
		}
	}()
	if len(*b) == 0 {
		return nil
	}
	_, err := c.Conn.Write(*b)
	return err
}

// findCork returns the corkConn under c (through TLS), or nil.
func findCork(c net.Conn) *corkConn {
	for c != nil {
		switch t := c.(type) {
		case *corkConn:
			return t
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = t.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// hijackSpy is the ResponseWriter given to websocket.Accept: it records the
// connection the library hijacks, to find its corkConn.
type hijackSpy struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackSpy) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.conn = c
	return c, brw, err
}

func (h *hijackSpy) Unwrap() http.ResponseWriter { return h.ResponseWriter }
