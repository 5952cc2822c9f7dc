package load

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BlockSize is the write size of SOURCE connections and of the players'
// uploads, and the read size on both sides.
const BlockSize = 64 << 10

// Camera is the benchmark's TCP camera; see the package documentation for
// its protocol. Set Addr, call Initialize, and Close when done. Its methods
// are safe for concurrent use.
type Camera struct {
	// Addr is the listen address; empty means 127.0.0.1:0.
	Addr string

	ln    net.Listener // static after Initialize
	sunk  atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{} // guarded by mu
	done  bool                  // guarded by mu
}

// Initialize starts listening and accepting.
func (c *Camera) Initialize() error {
	addr := c.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to listen: %w", err)
	}
	c.ln = ln
	c.conns = make(map[net.Conn]struct{})
	c.wg.Go(c.accept)
	return nil
}

// ListenAddr returns the camera's host:port.
func (c *Camera) ListenAddr() string { return c.ln.Addr().String() }

// Sunk returns the bytes SINK connections have received so far.
func (c *Camera) Sunk() int64 { return c.sunk.Load() }

// Active returns the number of open connections.
func (c *Camera) Active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// Close stops accepting, closes every connection and waits for their goroutines.
func (c *Camera) Close() {
	c.ln.Close()
	c.mu.Lock()
	c.done = true
	for conn := range c.conns {
		conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *Camera) accept() {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.done {
			c.mu.Unlock()
			conn.Close()
			return
		}
		c.conns[conn] = struct{}{}
		c.mu.Unlock()
		c.wg.Go(func() {
			defer func() {
				conn.Close()
				c.mu.Lock()
				delete(c.conns, conn)
				c.mu.Unlock()
			}()
			c.serve(conn)
		})
	}
}

func (c *Camera) serve(conn net.Conn) {
	br := bufio.NewReaderSize(conn, 512)
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "BENCH" {
		return
	}
	switch f[1] {
	case "SOURCE":
		go drain(br, nil) // notice the hang-up
		block := randomBlock(BlockSize)
		for {
			if _, err := conn.Write(block); err != nil {
				return
			}
		}
	case "SINK":
		drain(br, &c.sunk)
	case "IDLE":
		if _, err := conn.Write([]byte{'!'}); err != nil {
			return
		}
		drain(br, nil)
	case "STREAM":
		if len(f) != 6 {
			return
		}
		rate, err1 := strconv.Atoi(f[2])
		chunk, err2 := strconv.Atoi(f[3])
		fps, err3 := strconv.Atoi(f[4])
		if err := errors.Join(err1, err2, err3); err != nil || rate <= 0 || chunk < 5 || chunk > 65535 || fps < 0 {
			return
		}
		go func() {
			drain(br, nil)
			conn.Close() // ends the writer too
		}()
		stream(conn, rate, chunk, fps, f[5] == "WRITEV")
	}
}

// drain reads r until it fails, adding the byte counts to n when set.
func drain(r io.Reader, n *atomic.Int64) {
	buf := make([]byte, BlockSize)
	for {
		m, err := r.Read(buf)
		if n != nil && m > 0 {
			n.Add(int64(m))
		}
		if err != nil {
			return
		}
	}
}

// stream writes interleaved packets of chunk bytes to conn at rate bytes/s
// until a write fails: each packet with its own write, or with vectored the
// packets due at one tick in one writev.
func stream(conn net.Conn, rate, chunk, fps int, vectored bool) {
	pkt := randomBlock(chunk)
	pkt[0], pkt[1] = '$', 0
	pkt[2], pkt[3] = byte((chunk-4)>>8), byte(chunk-4)
	interval := time.Second / time.Duration(max(fps, 1))
	if fps == 0 {
		interval = time.Duration(float64(time.Second) * float64(chunk) / float64(rate))
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	start := time.Now()
	var sent int64
	var vec net.Buffers
	for now := range t.C {
		due := int64(now.Sub(start).Seconds() * float64(rate))
		vec = vec[:0]
		for sent+int64(chunk) <= due {
			sent += int64(chunk)
			if vectored {
				vec = append(vec, pkt)
				continue
			}
			if _, err := conn.Write(pkt); err != nil {
				return
			}
		}
		if len(vec) > 0 {
			// WriteTo consumes its receiver; a copy keeps vec's array for reuse.
			b := vec
			if _, err := b.WriteTo(conn); err != nil {
				return
			}
		}
	}
}

func randomBlock(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(b)
	return b
}
