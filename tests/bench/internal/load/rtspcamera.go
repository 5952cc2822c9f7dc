package load

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
)

// RTSPPath is the path an RTSPCamera serves.
const RTSPPath = "/stream"

// Parameter sets of the RTSPCamera's H.264 stream (Baseline, 1920x1080 as
// gortsplib's own tests use). Nothing on the path decodes the pictures: the
// relay reads and forwards RTP packets as they are.
var (
	benchSPS = []byte{
		0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02,
		0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04,
		0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9,
		0x20,
	}
	benchPPS = []byte{0x68, 0xce, 0x3c, 0x80}
)

// RTSPCamera is a real RTSP camera for the fan-out test: a gortsplib server
// that answers DESCRIBE, SETUP (TCP interleaved only) and PLAY on RTSPPath
// and streams one H.264 video of BitsPerSec at FPS. Each picture is one NAL
// unit of random bytes (a keyframe once a second), packetized by gortsplib's
// RTP/H.264 encoder into FU-A packets of at most 1450 bytes of payload and
// written back to back at the picture's time, as a camera's packetizer
// sends. The stream runs whether or not anyone watches.
//
// Set the fields, call Initialize, and Close when done. Its methods are
// safe for concurrent use.
type RTSPCamera struct {
	// Addr is the listen address; empty means 127.0.0.1:0.
	Addr string
	// BitsPerSec is the stream's rate in RTP payload (default 1 500 000).
	BitsPerSec int
	// FPS is the picture rate (default 25).
	FPS int

	// Static after Initialize.
	srv    *gortsplib.Server
	stream *gortsplib.ServerStream
	media  *description.Media
	enc    *rtph264.Encoder // owned by the stream goroutine
	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup

	sessions       atomic.Int64
	activeSessions atomic.Int64
	produced       atomic.Int64 // RTP payload bytes the stream produced
	dropped        atomic.Int64
}

// Initialize starts listening and streaming.
func (c *RTSPCamera) Initialize() error {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.BitsPerSec == 0 {
		c.BitsPerSec = 1_500_000
	}
	if c.FPS == 0 {
		c.FPS = 25
	}
	forma := &format.H264{PayloadTyp: 96, SPS: benchSPS, PPS: benchPPS, PacketizationMode: 1}
	enc, err := forma.CreateEncoder()
	if err != nil {
		return fmt.Errorf("failed to create the RTP encoder: %w", err)
	}
	c.enc = enc
	c.media = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{forma}}
	c.srv = &gortsplib.Server{
		Handler:     &rtspCameraHandler{c: c},
		RTSPAddress: c.Addr,
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			c.ln = ln
			return ln, err
		},
	}
	if err := c.srv.Start(); err != nil {
		return fmt.Errorf("failed to start the RTSP camera: %w", err)
	}
	c.stream = &gortsplib.ServerStream{Server: c.srv, Desc: &description.Session{Title: "bench", Medias: []*description.Media{c.media}}}
	if err := c.stream.Initialize(); err != nil {
		c.srv.Close()
		return fmt.Errorf("failed to create the stream: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Go(func() { c.run(ctx) })
	return nil
}

// Close stops the stream and the server and waits for them.
func (c *RTSPCamera) Close() {
	c.cancel()
	c.wg.Wait()
	c.stream.Close()
	c.srv.Close()
}

// ListenAddr returns the camera's host:port.
func (c *RTSPCamera) ListenAddr() string { return c.ln.Addr().String() }

// URL returns the stream's URL.
func (c *RTSPCamera) URL() string { return "rtsp://" + c.ListenAddr() + RTSPPath }

// Sessions returns how many RTSP sessions were opened so far.
func (c *RTSPCamera) Sessions() int64 { return c.sessions.Load() }

// ActiveSessions returns how many RTSP sessions are open now.
func (c *RTSPCamera) ActiveSessions() int64 { return c.activeSessions.Load() }

// Produced returns the RTP payload bytes the stream has produced so far
// (whether or not anyone read them).
func (c *RTSPCamera) Produced() int64 { return c.produced.Load() }

// Dropped returns the packets dropped for a reader whose queue was full.
func (c *RTSPCamera) Dropped() int64 { return c.dropped.Load() }

// run writes one picture every 1/FPS s on an absolute schedule.
func (c *RTSPCamera) run(ctx context.Context) {
	size := c.BitsPerSec / 8 / c.FPS
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(rand.Uint32())
	}
	interval := time.Second / time.Duration(c.FPS)
	ticks := uint32(90000 / c.FPS)
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	for n := 0; ; n++ {
		due := start.Add(time.Duration(n) * interval)
		if wait := time.Until(due); wait > 0 {
			t.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		nalu := payload
		// NAL header: an IDR slice once a second, a non-IDR slice otherwise.
		if n%c.FPS == 0 {
			nalu[0] = 0x65
		} else {
			nalu[0] = 0x41
		}
		au := [][]byte{nalu}
		if n%c.FPS == 0 {
			au = [][]byte{benchSPS, benchPPS, nalu}
		}
		pkts, err := c.enc.Encode(au)
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			pkt.Timestamp = uint32(n) * ticks
			err := c.stream.WritePacketRTPWithNTP(c.media, pkt, due)
			var closed liberrors.ErrServerStreamClosed
			if errors.As(err, &closed) {
				return
			}
			c.produced.Add(int64(len(pkt.Payload)))
		}
	}
}

// rtspCameraHandler receives gortsplib's callbacks, concurrently; it
// touches only atomics and static fields.
type rtspCameraHandler struct{ c *RTSPCamera }

var (
	_ gortsplib.ServerHandlerOnSessionOpen      = (*rtspCameraHandler)(nil)
	_ gortsplib.ServerHandlerOnSessionClose     = (*rtspCameraHandler)(nil)
	_ gortsplib.ServerHandlerOnDescribe         = (*rtspCameraHandler)(nil)
	_ gortsplib.ServerHandlerOnSetup            = (*rtspCameraHandler)(nil)
	_ gortsplib.ServerHandlerOnPlay             = (*rtspCameraHandler)(nil)
	_ gortsplib.ServerHandlerOnStreamWriteError = (*rtspCameraHandler)(nil) // never the global log
	_ gortsplib.ServerHandlerOnDecodeError      = (*rtspCameraHandler)(nil)
)

func (h *rtspCameraHandler) OnSessionOpen(*gortsplib.ServerHandlerOnSessionOpenCtx) {
	h.c.sessions.Add(1)
	h.c.activeSessions.Add(1)
}

func (h *rtspCameraHandler) OnSessionClose(*gortsplib.ServerHandlerOnSessionCloseCtx) {
	h.c.activeSessions.Add(-1)
}

func (h *rtspCameraHandler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Path != RTSPPath {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, h.c.stream, nil
}

func (h *rtspCameraHandler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Path != RTSPPath {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	if ctx.Transport != gortsplib.TransportTCP {
		return &base.Response{StatusCode: base.StatusUnsupportedTransport}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, h.c.stream, nil
}

func (h *rtspCameraHandler) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (h *rtspCameraHandler) OnStreamWriteError(*gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	h.c.dropped.Add(1)
}

func (h *rtspCameraHandler) OnDecodeError(*gortsplib.ServerHandlerOnDecodeErrorCtx) {}
