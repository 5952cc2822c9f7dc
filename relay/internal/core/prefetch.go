package core

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// prefetchLimit bounds what is read from a player before its tunnel is up.
// Players send one small request (OPTIONS, DESCRIBE) and wait for the answer,
// so this is never reached in practice; when it is, reading simply pauses.
const prefetchLimit = 64 << 10

// prefetcher reads a player's connection while its tunnel is opening, so
// that the relay notices a player that hangs up and can read its first
// RTSP request to answer it with 503. The bytes are forwarded to the module
// once the tunnel is up. It runs one goroutine; stop ends it.
type prefetcher struct {
	conn    net.Conn      // static
	limit   int           // static
	changed chan struct{} // signalled (capacity 1) after each read and when the reader exits
	exited  chan struct{} // closed when the reader goroutine returns

	stopOnce sync.Once
	mu       sync.Mutex
	buf      []byte // guarded by mu
	err      error  // guarded by mu: the read error that ended the reader
	stopped  bool   // guarded by mu: stop interrupted the reader
}

func startPrefetch(conn net.Conn, limit int) *prefetcher {
	p := &prefetcher{conn: conn, limit: limit, changed: make(chan struct{}, 1), exited: make(chan struct{})}
	go p.read()
	return p
}

func (p *prefetcher) read() {
	defer close(p.exited)
	defer p.signal()
	b := make([]byte, 4096)
	for {
		n, err := p.conn.Read(b)
		p.mu.Lock()
		p.buf = append(p.buf, b[:n]...)
		full := len(p.buf) >= p.limit
		if err != nil {
			if p.stopped && errors.Is(err, os.ErrDeadlineExceeded) {
				err = nil // our own interruption, not the player's doing
			}
			p.err = err
		}
		p.mu.Unlock()
		if err != nil || full {
			return
		}
		p.signal()
		p.mu.Lock()
		stopped := p.stopped
		p.mu.Unlock()
		if stopped {
			return
		}
	}
}

func (p *prefetcher) signal() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// failed returns the read error that ended the reader (io.EOF when the
// player hung up), or nil while it reads or after stop.
func (p *prefetcher) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// waitFor waits until cond holds for the bytes read so far, the reader
// exits, or timeout passes, and returns a copy of the bytes and the read
// error, if any.
func (p *prefetcher) waitFor(cond func([]byte) bool, timeout time.Duration) ([]byte, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		p.mu.Lock()
		buf, err, ok := append([]byte(nil), p.buf...), p.err, cond(p.buf)
		p.mu.Unlock()
		if ok || err != nil {
			return buf, err
		}
		select {
		case <-p.changed:
		case <-p.exited:
			p.mu.Lock()
			buf, err = append([]byte(nil), p.buf...), p.err
			p.mu.Unlock()
			return buf, err
		case <-t.C:
			return buf, nil
		}
	}
}

// stop ends the reader, restores the connection's read deadline, and
// returns the bytes read so far and the read error that ended the reader
// (nil if stop did). It may be called more than once; later calls return
// nothing.
func (p *prefetcher) stop() ([]byte, error) {
	first := false
	p.stopOnce.Do(func() {
		first = true
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
		// Interrupt a blocked Read; net.Conn's contract makes it return
		// os.ErrDeadlineExceeded without losing data.
		p.conn.SetReadDeadline(time.Unix(1, 0))
		<-p.exited
		p.conn.SetReadDeadline(time.Time{})
	})
	if !first {
		return nil, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	buf, err := p.buf, p.err
	p.buf = nil
	return buf, err
}
