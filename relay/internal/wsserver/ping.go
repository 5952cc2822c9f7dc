package wsserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Liveness.
//
// A module whose link froze (power cut, NAT entry dropped, cellular handover:
// no FIN, no RST) leaves the relay's reads blocked for as long as TCP keeps
// the connection, which can be hours. The relay pings each module and aborts
// the connection when a pong does not come back in time.

// ErrDeadPeer is wrapped by the errors of a Conn's Read, WriteTo and Write
// once the module failed to answer a ping in time and the connection was
// aborted. Test with errors.Is.
var ErrDeadPeer = errors.New("module did not answer ping")

// pingOptions configures a Conn's ping loop; the zero value disables it.
type pingOptions struct {
	interval time.Duration // between pings; <= 0 disables pings
	timeout  time.Duration // wait for each pong; <= 0 means interval
	log      *slog.Logger  // for "module unresponsive"; required with pings
}

// startPings starts the ping loop unless p disables it. The loop ends when
// ctx is done, when stopPings is called, or when a ping fails; Close waits
// for it. Called once, from newConn.
func (c *Conn) startPings(ctx context.Context, p pingOptions) {
	if p.interval <= 0 {
		c.stopPings = func() {}
		return
	}
	if p.timeout <= 0 {
		p.timeout = p.interval
	}
	c.pingTimeout = p.timeout
	ctx, c.stopPings = context.WithCancel(ctx)
	c.pingsDone = make(chan struct{})
	go c.pingLoop(ctx, p)
}

// pingLoop pings the module every p.interval and waits p.timeout for each
// pong. A module that dies just after a pong is detected at the next ping,
// so within interval + timeout.
func (c *Conn) pingLoop(ctx context.Context, p pingOptions) {
	defer close(c.pingsDone)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.ping(p); err != nil {
			if c.dead.Load() {
				c.abort()
			}
			// Otherwise the connection closed or broke, and its reader or
			// writer reports why.
			return
		}
	}
}

// ping sends one ping and waits up to p.timeout for its pong. When the pong
// does not come in time, it declares the module dead before returning.
//
// Ping's context is not the Conn's and has no deadline: coder/websocket
// closes the connection when the context of a frame write ends, and a
// consumer woken by that close must find the WARN line written and c.dead
// set. So the timer declares first and cancels second. Closing the Conn
// does not cancel a ping either, which could cut a close handshake waiting
// for the same write lock; Ping returns once the websocket has closed.
func (c *Conn) ping(p pingOptions) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fired := make(chan struct{})
	timer := time.AfterFunc(p.timeout, func() {
		defer close(fired)
		c.declareDead(p, nil)
		cancel()
	})
	err := c.ws.Ping(ctx)
	if !timer.Stop() {
		<-fired // even a pong that raced the timer came too late
		return fmt.Errorf("%w within %v", ErrDeadPeer, p.timeout)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// coder/websocket's own bound on writing a control frame (5 s)
		// ended first: PingTimeout is above it and the ping was stuck
		// behind a full socket buffer. The library has already closed the
		// connection, so a consumer woken by that may miss ErrDeadPeer.
		c.declareDead(p, err)
	}
	return err
}

// declareDead logs that the module is unresponsive and sets c.dead, in that
// order; the caller then closes the connection. Called once at most: the
// ping loop ends after it.
func (c *Conn) declareDead(p pingOptions, err error) {
	attrs := []any{"ping_timeout", p.timeout.String(), "bound", (p.interval + p.timeout).String()}
	if err != nil {
		attrs = append(attrs, "error", err.Error())
	}
	p.log.Warn("module unresponsive", attrs...)
	c.dead.Store(true)
}

// deadErr wraps err with ErrDeadPeer when the ping loop found the module
// dead. io.EOF (the module had closed normally) is left alone.
func (c *Conn) deadErr(err error) error {
	if err == nil || err == io.EOF || !c.dead.Load() || errors.Is(err, ErrDeadPeer) {
		return err
	}
	return fmt.Errorf("%w within %v: %w", ErrDeadPeer, c.pingTimeout, err)
}
