package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
)

// Header returns the first line a client sends to choose the camera's mode.
func Header(mode string, args ...int) []byte {
	s := "BENCH " + mode
	for _, a := range args {
		s += fmt.Sprintf(" %d", a)
	}
	return []byte(s + "\n")
}

// StreamHeader is the header of an RTSP-like stream of bitsPerSec in
// packets of chunk bytes; see the package documentation for fps and vectored.
func StreamHeader(bitsPerSec, chunk, fps int, vectored bool) []byte {
	mode := " WRITE\n"
	if vectored {
		mode = " WRITEV\n"
	}
	h := Header("STREAM", bitsPerSec/8, chunk, fps)
	return append(h[:len(h)-1], mode...)
}

// Conn is a player connection that counts what it receives. Start it with
// Open; its methods are safe for concurrent use.
type Conn struct {
	net.Conn
	received atomic.Int64
	first    chan struct{} // closed at the first byte received
	done     chan struct{} // closed when the reader has ended
	err      error         // the read error, set before done is closed
}

// Open connects to addr, sends header and, when wait is true, waits for the
// first byte back (the tunnel is then fully open). It keeps reading and
// counting in the background until Close.
func Open(ctx context.Context, addr string, header []byte, wait bool) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if _, err := nc.Write(header); err != nil {
		nc.Close()
		return nil, fmt.Errorf("failed to send the header: %w", err)
	}
	c := &Conn{Conn: nc, first: make(chan struct{}), done: make(chan struct{})}
	go c.read()
	if wait {
		select {
		case <-c.first:
		case <-c.done:
			nc.Close()
			return nil, fmt.Errorf("connection ended before the first byte: %w", c.err)
		case <-ctx.Done():
			nc.Close()
			<-c.done
			return nil, ctx.Err()
		}
	}
	return c, nil
}

func (c *Conn) read() {
	defer close(c.done)
	buf := make([]byte, BlockSize)
	firstSeen := false
	for {
		n, err := c.Conn.Read(buf)
		if n > 0 {
			c.received.Add(int64(n))
			if !firstSeen {
				firstSeen = true
				close(c.first)
			}
		}
		if err != nil {
			c.err = err
			return
		}
	}
}

// Received returns the bytes received so far.
func (c *Conn) Received() int64 { return c.received.Load() }

// Ended reports whether the connection has ended (the reader saw an error or EOF).
func (c *Conn) Ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Close closes the connection and waits for the reader.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	<-c.done
	return err
}

// Rate is a measured throughput.
type Rate struct {
	Bytes   int64         `json:"bytes"`
	Elapsed time.Duration `json:"elapsedNs"`
}

// MBps returns the rate in megabytes (10^6 bytes) per second.
func (r Rate) MBps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Elapsed.Seconds() / 1e6
}

// Window is the measurement window of Download and Upload: traffic runs for
// Warmup first, then the bytes are counted over Duration. OnStart and OnStop,
// when set, are called at the window's edges (e.g. to read CPU counters).
type Window struct {
	Warmup, Duration time.Duration
	OnStart, OnStop  func()
}

// Download measures camera → player throughput through the path ending at
// addr: it starts a SOURCE connection and counts the bytes received in w.
func Download(ctx context.Context, addr string, w Window) (Rate, error) {
	c, err := Open(ctx, addr, Header("SOURCE"), true)
	if err != nil {
		return Rate{}, err
	}
	defer c.Close()
	return measure(ctx, c.Received, c.Ended, w)
}

// Upload measures player → camera throughput through the path ending at
// addr: it writes BlockSize blocks and counts what cam's SINK side received
// in w.
func Upload(ctx context.Context, addr string, cam *Camera, w Window) (Rate, error) {
	c, err := Open(ctx, addr, Header("SINK"), false)
	if err != nil {
		return Rate{}, err
	}
	defer c.Close()
	var werr atomic.Pointer[error]
	stop := make(chan struct{})
	written := make(chan struct{})
	go func() {
		defer close(written)
		block := randomBlock(BlockSize)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write(block); err != nil {
				werr.Store(&err)
				return
			}
		}
	}()
	r, err := measure(ctx, cam.Sunk, func() bool { return werr.Load() != nil }, w)
	failed := werr.Load() // before the close below fails the writer on purpose
	close(stop)
	c.Conn.Close() // unblocks a pending write
	<-written
	if err == nil && failed != nil {
		err = fmt.Errorf("upload write failed: %w", *failed)
	}
	return r, err
}

// measure counts how far counter advances in w.
func measure(ctx context.Context, counter func() int64, ended func() bool, w Window) (Rate, error) {
	if err := testutil.Sleep(ctx, w.Warmup); err != nil {
		return Rate{}, err
	}
	if w.OnStart != nil {
		w.OnStart()
	}
	b0, t0 := counter(), time.Now()
	err := testutil.Sleep(ctx, w.Duration)
	r := Rate{Bytes: counter() - b0, Elapsed: time.Since(t0)}
	if w.OnStop != nil {
		w.OnStop()
	}
	if err != nil {
		return r, err
	}
	if ended() {
		return r, errors.New("the connection ended during the measurement")
	}
	return r, nil
}
