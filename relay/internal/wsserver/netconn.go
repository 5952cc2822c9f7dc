package wsserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Conn is a module's websocket as a net.Conn, carrying the tunnel's bytes
// in binary messages. Each guarantee is covered by a test:
//
//   - Each Write sends one binary message. Read returns message data as a
//     byte stream, across message boundaries. A text message is an error.
//   - Read returns io.EOF after the module closes with 1000 (normal) or 1001
//     (going away); any other close code or a dropped connection is an error.
//   - WriteTo copies the stream to a writer without holding a buffer while it
//     waits for the module's next message (io.Copy uses it).
//   - Close sends close code 1000 and waits for the module's close frame (up
//     to five seconds); CloseGoingAway sends 1001 instead.
//   - The context passed to NewConn bounds the connection: when it is done,
//     the connection is closed underneath and reads and writes fail.
//   - Served by a Handler with PingInterval set, the module is pinged and
//     must answer within PingTimeout (the pong is read by whoever is in Read
//     or WriteTo, so the caller keeps a read pending). Otherwise the
//     connection is aborted and blocked and later calls fail with an error
//     wrapping ErrDeadPeer. Close and CloseGoingAway also wait for the
//     pinging goroutine, which ends with the websocket; no goroutine is
//     started without pings.
//   - Deadlines work as in websocket.NetConn: a deadline that expires while
//     no call is blocked makes the next calls fail; one that expires during
//     a blocked Read or Write closes the whole connection. Either way the
//     error wraps os.ErrDeadlineExceeded (the net.Conn contract). The relay's
//     core sets no deadlines on module connections.
//
// Conn is safe for one concurrent reader and one concurrent writer.
//
// It replaces websocket.NetConn, which gives every read and write a
// cancellable context: coder/websocket registers a context.AfterFunc with
// each, allocations and a map insert and delete per message. Conn passes
// context.Background() and enforces its context and deadlines by closing the
// connection instead.
type Conn struct {
	ws    *websocket.Conn
	cork  *corkConn   // the connection under TLS; nil when not served on Listener
	watch func() bool // stops the context watch

	readMu sync.Mutex
	reader io.Reader // guarded by readMu: the message being read, or nil
	eof    bool      // guarded by readMu: the module closed normally

	writeMu sync.Mutex

	rd, wd deadline

	// Liveness (ping.go). Static after construction, except dead.
	stopPings   func()        // ends the ping loop; safe to call twice
	pingsDone   chan struct{} // closed when the ping loop has exited; nil without pings
	pingTimeout time.Duration // for ErrDeadPeer's message
	dead        atomic.Bool   // set by the ping loop before it aborts
}

// NewConn wraps ws; ctx bounds the connection's lifetime.
func NewConn(ctx context.Context, ws *websocket.Conn) *Conn {
	return newConn(ctx, ws, nil, pingOptions{})
}

// newCorkedConn is NewConn for a websocket served over conn (as hijacked):
// when conn was accepted by Listener, each Write leaves in one system call,
// and the connection can be aborted without a close handshake. p starts
// pings.
func newCorkedConn(ctx context.Context, ws *websocket.Conn, conn net.Conn, p pingOptions) *Conn {
	return newConn(ctx, ws, findCork(conn), p)
}

func newConn(ctx context.Context, ws *websocket.Conn, cork *corkConn, p pingOptions) *Conn {
	ws.SetReadLimit(-1) // messages are streamed, never buffered whole
	c := &Conn{ws: ws, cork: cork}
	c.rd.abort, c.wd.abort = c.abort, c.abort
	c.watch = context.AfterFunc(ctx, c.abort)
	c.startPings(ctx, p)
	return c
}

// abort closes the connection at once: the network connection under TLS
// when known (this also ends a close handshake in progress), otherwise the
// websocket without a handshake.
func (c *Conn) abort() {
	if c.cork != nil {
		c.cork.Conn.Close()
		return
	}
	c.ws.CloseNow()
}

// errTextMessage is the protocol error of a module that sends text.
var errTextMessage = errors.New("module sent a text message; the tunnel carries binary messages only")

// message makes c.reader the message being read, waiting for the module's
// next one when none is. Called with readMu held.
func (c *Conn) message() error {
	if c.reader != nil {
		return nil
	}
	if c.eof {
		return io.EOF
	}
	typ, r, err := c.ws.Reader(context.Background())
	if err != nil {
		switch websocket.CloseStatus(err) {
		case websocket.StatusNormalClosure, websocket.StatusGoingAway:
			c.eof = true
			return io.EOF
		}
		return err
	}
	if typ != websocket.MessageBinary {
		c.ws.Close(websocket.StatusUnsupportedData, "binary messages only")
		return errTextMessage
	}
	c.reader = r
	return nil
}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (n int, err error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if err := c.rd.begin(); err != nil {
		return 0, err
	}
	defer func() { err = c.deadErr(c.rd.end(err)) }()
	for {
		if err := c.message(); err != nil {
			return 0, err
		}
		n, err := c.reader.Read(p)
		if err == io.EOF { // end of this message, not of the stream
			c.reader, err = nil, nil
		}
		if n > 0 || err != nil || len(p) == 0 {
			return n, err
		}
	}
}

// bufSize is WriteTo's copy buffer: a module's message (one read of its
// camera) fits whole.
const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// WriteTo copies the module's stream to w until the module closes normally
// (nil error) or the connection fails. It takes a copy buffer only once a
// message has arrived, and writes each message to w in one call when it fits
// the buffer: an idle tunnel holds no buffer.
func (c *Conn) WriteTo(w io.Writer) (total int64, err error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if err := c.rd.begin(); err != nil {
		return 0, err
	}
	defer func() { err = c.deadErr(c.rd.end(err)) }()
	for {
		if err := c.message(); err == io.EOF {
			return total, nil
		} else if err != nil {
			return total, err
		}
		n, err := c.copyMessage(w)
		total += n
		if err != nil {
			return total, err
		}
	}
}

// copyMessage copies the rest of the current message to w, in writes of up
// to bufSize. Called with readMu held.
func (c *Conn) copyMessage(w io.Writer) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	var total int64
	for {
		n, rerr := io.ReadFull(c.reader, *bp)
		if n > 0 {
			m, werr := w.Write((*bp)[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		switch rerr {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF: // the message ended
			c.reader = nil
			return total, nil
		default:
			return total, rerr
		}
	}
}

// Write implements net.Conn. The message leaves in one write system call
// when the connection was accepted by Listener.
//
// A Write blocked on a module that stopped reading holds the corked
// connection's lock, so closing the websocket then waits for crypto/tls's
// close_notify, which gives up after 5 s; without corking, tls closes at once.
// The relay ends such sessions through Close anyway, which itself waits up to
// 5 s for the module's close frame.
func (c *Conn) Write(p []byte) (n int, err error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.wd.begin(); err != nil {
		return 0, err
	}
	defer func() { err = c.deadErr(c.wd.end(err)) }()
	if c.cork != nil {
		c.cork.cork()
	}
	err = c.ws.Write(context.Background(), websocket.MessageBinary, p)
	if c.cork != nil {
		if uerr := c.cork.uncork(); uerr != nil && err == nil {
			err = uerr
		}
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close sends close code 1000 and waits for the module's answer, then for
// the ping goroutine.
func (c *Conn) Close() error {
	c.stop()
	err := c.ws.Close(websocket.StatusNormalClosure, "")
	c.waitPings()
	return err
}

// CloseGoingAway closes with code 1001: the relay is shutting down. It
// waits as Close does.
func (c *Conn) CloseGoingAway() error {
	c.stop()
	err := c.ws.Close(websocket.StatusGoingAway, "relay shutting down")
	c.waitPings()
	return err
}

func (c *Conn) stop() {
	c.watch()
	c.stopPings()
	c.rd.set(time.Time{})
	c.wd.set(time.Time{})
}

// waitPings waits for the ping loop to exit. Called after the websocket has
// closed, which ends a ping waiting for its pong.
func (c *Conn) waitPings() {
	if c.pingsDone != nil {
		<-c.pingsDone
	}
}

// LocalAddr implements net.Conn: the address of the connection under TLS.
func (c *Conn) LocalAddr() net.Addr {
	if c.cork != nil {
		return c.cork.LocalAddr()
	}
	return wsAddr{}
}

// RemoteAddr implements net.Conn: the module's address.
func (c *Conn) RemoteAddr() net.Addr {
	if c.cork != nil {
		return c.cork.RemoteAddr()
	}
	return wsAddr{}
}

type wsAddr struct{}

func (wsAddr) Network() string { return "websocket" }
func (wsAddr) String() string  { return "websocket/unknown-addr" }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { c.rd.set(t); return nil }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error { c.wd.set(t); return nil }

// deadline is one direction's deadline. When it expires during a call, it
// aborts the connection; otherwise the next calls fail.
//
// begin marks a call active and then checks expired; the timer marks expired
// and then checks active. The atomics order those steps, so a deadline that
// expires as a call begins is seen by one of the two.
type deadline struct {
	abort func() // static

	active  atomic.Bool
	expired atomic.Bool

	mu    sync.Mutex
	gen   uint64      // guarded by mu: bumped by set, so an old timer does nothing
	timer *time.Timer // guarded by mu
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.expired.Store(false)
	if t.IsZero() {
		return
	}
	if time.Until(t) <= 0 {
		d.expired.Store(true)
		if d.active.Load() {
			go d.abort() // not under mu: closing may wait
		}
		return
	}
	gen := d.gen
	d.timer = time.AfterFunc(time.Until(t), func() {
		d.mu.Lock()
		current := d.gen == gen
		if current {
			d.expired.Store(true)
		}
		d.mu.Unlock()
		if current && d.active.Load() {
			d.abort() // outside mu: closing may wait
		}
	})
}

// begin starts a call; it fails when the deadline has passed.
func (d *deadline) begin() error {
	d.active.Store(true)
	if d.expired.Load() {
		d.active.Store(false)
		return fmt.Errorf("websocket: %w", os.ErrDeadlineExceeded)
	}
	return nil
}

// end finishes a call and returns its error, wrapping os.ErrDeadlineExceeded
// when the deadline expired during it.
func (d *deadline) end(err error) error {
	d.active.Store(false)
	if err != nil && d.expired.Load() && !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %w", os.ErrDeadlineExceeded, err)
	}
	return err
}
