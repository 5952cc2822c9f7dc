package wsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Conn is a module's websocket as a net.Conn, carrying the tunnel's bytes
// in binary messages. It is websocket.NetConn with these guarantees, each
// covered by a test:
//
//   - Each Write sends one binary message. Read returns message data as a
//     byte stream, across message boundaries. A text message is an error.
//   - Read returns io.EOF after the module closes with 1000 (normal) or 1001
//     (going away); any other close code or a dropped connection is an error.
//   - Close sends close code 1000 and waits for the module's close frame (up
//     to five seconds); CloseGoingAway sends 1001 instead.
//   - The context passed to NewConn bounds the connection: when it is done,
//     reads and writes fail.
//   - Deadlines work, but as in websocket.NetConn an expired deadline during
//     a blocked Read or Write closes the whole websocket; the error then
//     wraps os.ErrDeadlineExceeded (the net.Conn contract). The relay's core
//     sets no deadlines on module connections.
//
// Conn is safe for one concurrent reader and one concurrent writer.
type Conn struct {
	net.Conn
	ws   *websocket.Conn
	cork *corkConn // the connection under TLS; nil when not served on Listener

	readDeadline  atomic.Pointer[time.Time]
	writeDeadline atomic.Pointer[time.Time]
}

// NewConn wraps ws; ctx bounds the connection's lifetime.
func NewConn(ctx context.Context, ws *websocket.Conn) *Conn {
	return &Conn{Conn: websocket.NetConn(ctx, ws, websocket.MessageBinary), ws: ws}
}

// newCorkedConn is NewConn for a websocket served over conn (as hijacked):
// when conn was accepted by Listener, each Write leaves in one system call.
func newCorkedConn(ctx context.Context, ws *websocket.Conn, conn net.Conn) *Conn {
	c := NewConn(ctx, ws)
	c.cork = findCork(conn)
	return c
}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	return n, deadlineErr(err, c.readDeadline.Load())
}

// Write implements net.Conn. The message leaves in one write system call
// when the connection was accepted by Listener.
//
// A Write blocked on a module that stopped reading holds the corked
// connection's lock, so closing the websocket then waits for crypto/tls's
// close_notify, which gives up after 5 s; without corking, tls closes at once.
// The relay ends such sessions through Close anyway, which itself waits up to
// 5 s for the module's close frame.
func (c *Conn) Write(p []byte) (int, error) {
	if c.cork == nil {
		n, err := c.Conn.Write(p)
		return n, deadlineErr(err, c.writeDeadline.Load())
	}
	c.cork.cork()
	n, err := c.Conn.Write(p)
	if uerr := c.cork.uncork(); uerr != nil && err == nil {
		n, err = 0, uerr
	}
	return n, deadlineErr(err, c.writeDeadline.Load())
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.readDeadline.Store(&t)
	c.writeDeadline.Store(&t)
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.readDeadline.Store(&t)
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.writeDeadline.Store(&t)
	return c.Conn.SetWriteDeadline(t)
}

// CloseGoingAway closes with code 1001: the relay is shutting down.
func (c *Conn) CloseGoingAway() error {
	return c.ws.Close(websocket.StatusGoingAway, "relay shutting down")
}

// deadlineErr makes an error caused by an expired deadline wrap
// os.ErrDeadlineExceeded. websocket.NetConn reports it as
// context.DeadlineExceeded, or as context.Canceled when the deadline
// interrupted a blocked call, so the deadline itself is checked.
func deadlineErr(err error, deadline *time.Time) error {
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	expired := deadline != nil && !deadline.IsZero() && !time.Now().Before(*deadline)
	if expired || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", os.ErrDeadlineExceeded, err)
	}
	return err
}
