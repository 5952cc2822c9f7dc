package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"testing"
)

// recordingConn records each write it gets.
type recordingConn struct {
	io.ReadCloser
	writes [][]byte
	fail   error
}

func (c *recordingConn) Write(p []byte) (int, error) {
	if c.fail != nil {
		return 0, c.fail
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

// frame encodes one websocket frame with a payload of n bytes.
func frame(r *rand.Rand, n int, masked bool) []byte {
	var h []byte
	h = append(h, 0x82) // FIN, binary
	var m byte
	if masked {
		m = 0x80
	}
	switch {
	case n < 126:
		h = append(h, m|byte(n))
	case n <= 0xffff:
		h = append(h, m|126)
		h = binary.BigEndian.AppendUint16(h, uint16(n))
	default:
		h = append(h, m|127)
		h = binary.BigEndian.AppendUint64(h, uint64(n))
	}
	if masked {
		h = binary.BigEndian.AppendUint32(h, r.Uint32())
	}
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return append(h, p...)
}

// TestFrameWriter splits a stream of frames of every header form into writes
// at random points and checks that the bytes pass unchanged, each write to
// the connection ending at a frame boundary (or holding maxHeld bytes).
func TestFrameWriter(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	sizes := []int{0, 1, 125, 126, 127, 4000, 4096, 32 << 10, 0xffff, 0x10000, maxHeld - 14, maxHeld, 200 << 10}
	for round := range 20 {
		var stream []byte
		var boundaries []int // stream offsets where frames end
		for range 30 {
			n := sizes[r.IntN(len(sizes))]
			if r.IntN(2) == 0 {
				n = r.IntN(3000)
			}
			stream = append(stream, frame(r, n, r.IntN(4) != 0)...)
			boundaries = append(boundaries, len(stream))
		}
		conn := &recordingConn{}
		w := &frameWriter{ReadWriteCloser: conn}
		for off := 0; off < len(stream); {
			n := min(1+r.IntN(9000), len(stream)-off)
			if round%2 == 0 {
				n = min(1+r.IntN(20), len(stream)-off) // headers split byte by byte too
			}
			if m, err := w.Write(stream[off : off+n]); m != n || err != nil {
				t.Fatalf("Write = %d, %v; want %d", m, err, n)
			}
			off += n
		}
		if w.held != nil {
			t.Fatalf("round %d: %d bytes still held after the last frame", round, len(*w.held))
		}
		got := bytes.Join(conn.writes, nil)
		if !bytes.Equal(got, stream) {
			t.Fatalf("round %d: stream changed (%d bytes, want %d)", round, len(got), len(stream))
		}
		isBoundary := map[int]bool{}
		for _, b := range boundaries {
			isBoundary[b] = true
		}
		off := 0
		for i, wr := range conn.writes {
			off += len(wr)
			if !isBoundary[off] && len(wr) != maxHeld {
				t.Fatalf("round %d: write %d (%d bytes) ends inside a frame at %d", round, i, len(wr), off)
			}
		}
		if len(conn.writes) > len(boundaries)+len(stream)/maxHeld+1 {
			t.Errorf("round %d: %d writes for %d frames", round, len(conn.writes), len(boundaries))
		}
	}
}

// TestFrameWriterPassThrough checks that whole frames are not copied and
// that a failed write is reported.
func TestFrameWriterPassThrough(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	conn := &recordingConn{}
	w := &frameWriter{ReadWriteCloser: conn}
	two := append(frame(r, 10, true), frame(r, 300, true)...)
	if n, err := w.Write(two); n != len(two) || err != nil || len(conn.writes) != 1 || w.held != nil {
		t.Fatalf("Write of two whole frames: %d %v, %d writes", n, err, len(conn.writes))
	}
	conn.fail = errors.New("broken")
	big := frame(r, 5000, true)
	if _, err := w.Write(big[:4096]); err != nil {
		t.Fatalf("held write failed early: %v", err)
	}
	if _, err := w.Write(big[4096:]); !errors.Is(err, conn.fail) {
		t.Fatalf("Write after a failure = %v, want %v", err, conn.fail)
	}
}

func BenchmarkFrameWriter(b *testing.B) {
	r := rand.New(rand.NewPCG(9, 9))
	msg := frame(r, 32<<10, true)
	w := &frameWriter{ReadWriteCloser: struct {
		io.ReadCloser
		io.Writer
	}{nil, io.Discard}}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for range b.N {
		for off := 0; off < len(msg); off += 4096 {
			w.Write(msg[off:min(off+4096, len(msg))])
		}
	}
}

// netRecorder is a net.Conn that records its writes.
type netRecorder struct {
	net.Conn
	recordingConn
}

func (c *netRecorder) Write(p []byte) (int, error) { return c.recordingConn.Write(p) }

func TestCorkConn(t *testing.T) {
	rec := &netRecorder{}
	c := &corkConn{Conn: rec}
	c.Write([]byte("a"))
	c.cork()
	c.Write([]byte("bc"))
	c.Write([]byte("de"))
	if len(rec.writes) != 1 {
		t.Fatalf("writes while corked reached the connection: %q", rec.writes)
	}
	if err := c.uncork(); err != nil {
		t.Fatal(err)
	}
	c.cork()
	if err := c.uncork(); err != nil { // nothing collected: no write
		t.Fatal(err)
	}
	c.Write([]byte("f"))
	if got := fmt.Sprintf("%q", rec.writes); got != `["a" "bcde" "f"]` {
		t.Fatalf("writes %s", got)
	}
	rec.fail = errors.New("broken")
	c.cork()
	c.Write([]byte("g"))
	if err := c.uncork(); !errors.Is(err, rec.fail) {
		t.Fatalf("uncork = %v, want %v", err, rec.fail)
	}
}

// TestFrameWriterCorks checks that a frame larger than a TLS record is
// written with the connection under TLS corked, and a small one is not.
func TestFrameWriterCorks(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 10))
	rec := &netRecorder{}
	cork := &corkConn{Conn: rec}
	// tlsish stands in for crypto/tls: it writes in records of 16 KiB.
	tlsish := struct {
		io.ReadCloser
		io.Writer
	}{nil, writerFunc(func(p []byte) (int, error) {
		for off := 0; off < len(p); off += maxPlaintextRecord {
			if _, err := cork.Write(p[off:min(off+maxPlaintextRecord, len(p))]); err != nil {
				return off, err
			}
		}
		return len(p), nil
	})}
	w := &frameWriter{ReadWriteCloser: tlsish, cork: cork}
	big, small := frame(r, 40<<10, true), frame(r, 100, true)
	for off := 0; off < len(big); off += 4096 {
		w.Write(big[off:min(off+4096, len(big))])
	}
	w.Write(small)
	if len(rec.writes) != 2 || !bytes.Equal(rec.writes[0], big) || !bytes.Equal(rec.writes[1], small) {
		t.Fatalf("%d writes on the connection, want the big frame in one and the small one", len(rec.writes))
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
