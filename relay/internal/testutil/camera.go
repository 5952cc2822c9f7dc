package testutil

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/pion/rtp"
)

// CameraPath is the only path a Camera serves; others get 404.
const CameraPath = "/stream"

// Frames is what a Camera sends as H.264 access units: an IDR frame of
// IDR bytes every GOP frames (fragmented for 1450-byte payloads, as
// cameras do), P bytes for the others.
type Frames struct {
	IDR, P, GOP int
}

// CameraOptions describes a Camera; the zero value is an H.264 camera
// sending a 200-byte single-NAL-unit packet every 5 ms.
type CameraOptions struct {
	// Format is the one format of the one video media; nil means H.264,
	// payload type 96, packetization mode 1, parameter sets out of band
	// (none in the SDP).
	Format format.Format
	// Interval is the time between packets, or between access units with
	// Frames; zero means 5 ms.
	Interval time.Duration
	// PayloadSize is the size of each packet without Frames: a non-IDR
	// slice for H.264, opaque bytes for other formats; zero means 200.
	PayloadSize int
	// Frames, with an H.264 Format, makes the camera send whole access
	// units through gortsplib's encoder instead of one packet each time.
	Frames *Frames
}

// Camera is a real RTSP camera for tests: gortsplib's server on a loopback
// port, one video media on CameraPath over TCP, sending whether or not
// anyone plays. It is closed when the test ends. Its exported fields may
// be read and set by the test at any time.
type Camera struct {
	Plays  atomic.Int64 // PLAY requests accepted
	Refuse atomic.Bool  // DESCRIBE answers 404 while set
	Paused atomic.Bool  // nothing is written while set

	o      CameraOptions      // static after construction
	media  *description.Media // the one media it serves
	srv    *gortsplib.Server
	stream *gortsplib.ServerStream
	ln     net.Listener // captured from gortsplib's Listen hook

	mu    sync.Mutex
	conns map[*gortsplib.ServerConn]struct{} // guarded by mu: open connections

	cancel context.CancelFunc
	done   chan struct{} // closed when write has returned
}

// NewCamera starts a Camera.
func NewCamera(t testing.TB, o CameraOptions) *Camera {
	t.Helper()
	if o.Format == nil {
		o.Format = &format.H264{PayloadTyp: 96, PacketizationMode: 1}
	}
	if o.Interval == 0 {
		o.Interval = 5 * time.Millisecond
	}
	if o.PayloadSize == 0 {
		o.PayloadSize = 200
	}
	c := &Camera{
		o:     o,
		media: &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{o.Format}},
		conns: map[*gortsplib.ServerConn]struct{}{},
	}
	c.srv = &gortsplib.Server{
		Handler:     c,
		RTSPAddress: "127.0.0.1:0",
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			c.ln = ln
			return ln, err
		},
	}
	if err := c.srv.Start(); err != nil {
		t.Fatal(err)
	}
	c.stream = &gortsplib.ServerStream{Server: c.srv, Desc: &description.Session{Medias: []*description.Media{c.media}}}
	if err := c.stream.Initialize(); err != nil {
		c.srv.Close()
		t.Fatal(err)
	}
	var write func(int)
	if h, ok := o.Format.(*format.H264); ok && o.Frames != nil {
		enc, err := h.CreateEncoder()
		if err != nil {
			c.stream.Close()
			c.srv.Close()
			t.Fatal(err)
		}
		write = func(i int) { c.writeFrame(enc, i) }
	} else {
		write = c.writePacket()
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go c.run(ctx, write)
	t.Cleanup(c.close)
	return c
}

func (c *Camera) close() {
	c.cancel()
	<-c.done
	c.stream.Close()
	c.srv.Close()
}

// Addr returns the host:port the camera listens on.
func (c *Camera) Addr() string { return c.ln.Addr().String() }

// run calls write once per interval, counting from 0, until ctx ends.
func (c *Camera) run(ctx context.Context, write func(i int)) {
	defer close(c.done)
	tick := time.NewTicker(c.o.Interval)
	defer tick.Stop()
	for i := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if c.Paused.Load() {
			continue
		}
		write(i)
		i++
	}
}

// writePacket returns a writer of one packet per call, with a marker bit
// and increasing sequence numbers (from 1) and timestamps.
func (c *Camera) writePacket() func(int) {
	payload := make([]byte, c.o.PayloadSize)
	if _, ok := c.o.Format.(*format.H264); ok {
		payload = append([]byte{0x41}, payload...) // a non-IDR slice
	}
	return func(i int) {
		seq := uint16(i + 1)
		c.stream.WritePacketRTP(c.media, &rtp.Packet{
			Header: rtp.Header{
				Version: 2, Marker: true, PayloadType: c.o.Format.PayloadType(),
				SequenceNumber: seq, Timestamp: uint32(seq) * 900, SSRC: 0x12345678,
			},
			Payload: payload,
		})
	}
}

// writeFrame writes access unit i: an IDR frame every GOP frames, a
// non-IDR frame otherwise, all its packets with the frame's timestamp.
func (c *Camera) writeFrame(enc *rtph264.Encoder, i int) {
	f := c.o.Frames
	ts := uint32(i) * uint32(c.o.Interval.Seconds()*90000)
	au := [][]byte{append([]byte{0x41}, bytes.Repeat([]byte{byte(i)}, f.P)...)}
	if i%f.GOP == 0 {
		au = [][]byte{append([]byte{0x65}, bytes.Repeat([]byte{0xab}, f.IDR)...)}
	}
	pkts, err := enc.Encode(au)
	if err != nil {
		panic(err) // the encoder takes any access unit
	}
	for _, p := range pkts {
		p.Timestamp = ts
		c.stream.WritePacketRTP(c.media, p)
	}
}

// Active returns how many connections the camera has open.
func (c *Camera) Active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// Drop closes every connection from the camera's side.
func (c *Camera) Drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for sc := range c.conns {
		sc.Close()
	}
}

// OnConnOpen implements gortsplib.ServerHandlerOnConnOpen.
func (c *Camera) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conns[ctx.Conn] = struct{}{}
}

// OnConnClose implements gortsplib.ServerHandlerOnConnClose.
func (c *Camera) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.conns, ctx.Conn)
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (c *Camera) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Path != CameraPath || c.Refuse.Load() {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, c.stream, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (c *Camera) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Path != CameraPath {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, c.stream, nil
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (c *Camera) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	c.Plays.Add(1)
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnStreamWriteError keeps gortsplib from logging through the log package.
func (c *Camera) OnStreamWriteError(*gortsplib.ServerHandlerOnStreamWriteErrorCtx) {}
