package tunnel

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// Frame-sized writes.
//
// coder/websocket writes through a 4 KiB bufio.Writer, and a client masks its
// frames in that buffer, so every 4 KiB of a message became its own TLS
// record and its own write system call: eight for a 32 KiB message. Profiles
// of BenchmarkSplice and of the module under scripts/bench showed the write
// system calls as the largest cost. frameWriter sits between that buffer and
// the connection and passes each websocket frame on in one write, however the
// library split it: it parses the RFC 6455 frame headers in the byte stream
// (it never looks into payloads) and holds bytes only until the frame they
// belong to is complete. Frames the library hands over whole, e.g. control
// frames and small messages, are passed through without a copy.
//
// Holding bytes until the end of their frame never delays anything: the
// library writes a frame's bytes back to back under its write lock, from
// memory, and flushes at the end of every final frame anyway.
//
// crypto/tls then writes each record (16 KiB at most) with its own system
// call, so a frame larger than a record is written with the connection under
// TLS corked (corkConn): the records of one frame leave in one write. With
// both, a 32 KiB message is one write system call instead of eight, and
// BenchmarkSplice/wss used about a fifth less CPU per MB than with
// frame-sized writes alone.

// maxHeld bounds the bytes a frameWriter holds: a larger frame is passed on
// in pieces of this size.
const maxHeld = 64 << 10

var heldPool = sync.Pool{New: func() any { b := make([]byte, 0, maxHeld); return &b }}

// frameWriter is the response body of the websocket upgrade (the connection
// after the handshake) with frame-sized writes. Reads and Close pass through.
// Writes must come from one goroutine at a time, as coder/websocket does.
type frameWriter struct {
	io.ReadWriteCloser

	held   *[]byte // bytes of the incomplete frame, from heldPool; nil when none
	parser frameParser
	cork   *corkConn // the connection under TLS, corked around each write; nil: none
}

// frameParser follows the frame boundaries of a websocket byte stream. Its
// state is the position after the bytes consumed so far.
type frameParser struct {
	hdr     [14]byte // header bytes of the frame being parsed
	hdrLen  int      // header bytes collected; 0 at a frame boundary
	payload uint64   // payload bytes of the current frame still to come
}

// Write accepts p, passing on every completed frame at once.
func (w *frameWriter) Write(p []byte) (int, error) {
	if w.held == nil {
		saved := w.parser
		if w.parser.consume(p) {
			// p ends at a frame boundary and nothing is held: pass it through.
			return w.write(p, len(p))
		}
		w.parser = saved
	}
	// Accept p piece by piece so that a frame boundary inside p flushes there.
	n := 0
	for n < len(p) {
		if w.held == nil {
			w.held = heldPool.Get().(*[]byte)
		}
		room := min(len(p)-n, maxHeld-len(*w.held))
		chunk, boundary := w.parser.consumeUntilBoundary(p[n : n+room])
		*w.held = append(*w.held, chunk...)
		n += len(chunk)
		if boundary || len(*w.held) == maxHeld {
			if _, err := w.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// write writes b (which covers p[:n] of the caller) and reports n.
func (w *frameWriter) write(b []byte, n int) (int, error) {
	if _, err := w.corked(b); err != nil {
		return 0, err
	}
	return n, nil
}

// flush writes the held bytes and releases the buffer.
func (w *frameWriter) flush() (int, error) {
	b := w.held
	w.held = nil
	defer func() {
		*b = (*b)[:0]
		heldPool.Put(b)
	}()
	return w.corked(*b)
}

// corked writes b with the connection under TLS corked, if there is one.
func (w *frameWriter) corked(b []byte) (int, error) {
	if w.cork == nil || len(b) <= maxPlaintextRecord {
		return w.ReadWriteCloser.Write(b) // one record anyway
	}
	w.cork.cork()
	n, err := w.ReadWriteCloser.Write(b)
	if uerr := w.cork.uncork(); err == nil {
		err = uerr
	}
	return n, err
}

// maxPlaintextRecord is TLS's largest record payload: a write up to this
// size is one record and one write without corking.
const maxPlaintextRecord = 16 << 10

// consume advances the parser over all of p and reports whether p ended
// exactly at a frame boundary.
func (w *frameParser) consume(p []byte) (boundary bool) {
	for len(p) > 0 {
		chunk, _ := w.consumeUntilBoundary(p)
		p = p[len(chunk):]
	}
	return w.hdrLen == 0 && w.payload == 0
}

// consumeUntilBoundary advances the parser over p up to and including the
// end of the first frame that ends in p. It returns the bytes it consumed and
// whether they end a frame.
func (w *frameParser) consumeUntilBoundary(p []byte) (consumed []byte, boundary bool) {
	i := 0
	for i < len(p) {
		if w.payload > 0 {
			k := int(min(uint64(len(p)-i), w.payload))
			i += k
			w.payload -= uint64(k)
			if w.payload == 0 {
				w.hdrLen = 0
				return p[:i], true
			}
			continue
		}
		// In a header.
		w.hdr[w.hdrLen] = p[i]
		w.hdrLen++
		i++
		need := headerLen(w.hdr[:w.hdrLen])
		if w.hdrLen < need {
			continue
		}
		w.payload = payloadLen(w.hdr[:w.hdrLen])
		if w.payload == 0 { // a frame without payload, e.g. an empty pong
			w.hdrLen = 0
			return p[:i], true
		}
	}
	return p, false
}

// headerLen returns the length of the frame header that starts with h (at
// least one byte), or len(h)+1 while the second byte is missing.
func headerLen(h []byte) int {
	if len(h) < 2 {
		return 2
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h[1]&0x80 != 0 { // masked
		n += 4
	}
	return n
}

// payloadLen returns the payload length of the complete header h.
func payloadLen(h []byte) uint64 {
	switch l := h[1] & 0x7f; l {
	case 126:
		return uint64(h[2])<<8 | uint64(h[3])
	case 127:
		var n uint64
		for _, b := range h[2:10] {
			n = n<<8 | uint64(b)
		}
		return n
	default:
		return uint64(l)
	}
}

// newFrameTransport returns t (whose DialContext it wraps) as a
// RoundTripper that gives successful websocket upgrades a frameWriter. Each
// connection t dials is a corkConn, so that a frame that TLS splits into
// several records still leaves in one write. t must dial at most one
// connection per RoundTrip, as it does with keep-alives off.
func newFrameTransport(t *http.Transport) http.RoundTripper {
	ft := &frameTransport{rt: t}
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc := &corkConn{Conn: c}
		ft.last.Store(cc)
		return cc, nil
	}
	return ft
}

type frameTransport struct {
	rt   http.RoundTripper
	last atomic.Pointer[corkConn] // the connection dialed last
}

func (t *frameTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
			resp.Body = &frameWriter{ReadWriteCloser: rwc, cork: t.last.Load()}
		}
	}
	return resp, err
}

// corkConn is the connection under TLS. While corked it collects what TLS
// writes (the records of one frame: crypto/tls writes each record on its
// own) and passes it on in one write when uncorked. Uncorked, writes pass
// straight through. Its methods are safe for concurrent use.
type corkConn struct {
	net.Conn

	mu     sync.Mutex
	corked bool    // guarded by mu
	held   *[]byte // guarded by mu; from heldPool while corked
}

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
		if cap(*b) <= 2*maxHeld { // do not keep rare large buffers
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
