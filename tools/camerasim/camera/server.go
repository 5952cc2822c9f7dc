package camera

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
)

const (
	// DefaultAddr is the listen address used when Server.Addr is empty: loopback, with a
	// port chosen by the system (read it back with ListenAddr).
	DefaultAddr = "127.0.0.1:0"

	// DefaultPath is the stream path used when Server.Path is empty.
	DefaultPath = "/stream"

	// payloadType is the dynamic RTP payload type announced for H.264.
	payloadType = 96
)

// Server is a simulated RTSP camera. Set the exported fields, call Initialize, and Close
// when done. The exported fields must not be changed after Initialize. All methods are
// safe for concurrent use once Initialize has returned; several Servers may run in one
// process.
type Server struct {
	// Addr is the TCP address to listen on for RTSP. It defaults to DefaultAddr.
	Addr string
	// Path is the stream's path, e.g. "/stream"; a missing leading slash is added. Other
	// paths answer 404. It defaults to DefaultPath.
	Path string
	// User and Pass, when User is set, are the credentials a client must give (basic or
	// digest MD5, as most cameras accept) for DESCRIBE and SETUP. Pass without User is
	// an error.
	User, Pass string
	// Logger receives the server's structured logs. It defaults to discarding them.
	Logger *slog.Logger

	// Static after Initialize.
	clip   *clip
	media  *description.Media
	enc    *rtph264.Encoder // owned by the streamer goroutine after Initialize
	rtsp   *gortsplib.Server
	stream *gortsplib.ServerStream
	ln     net.Listener // the RTSP listener, captured from gortsplib's Listen hook
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once

	// published is s.stream once it is ready. gortsplib accepts connections as soon as
	// it starts, before the stream can exist, so the handler reads the stream from here
	// (the atomic store orders the stream's initialization before the handler's use).
	published atomic.Pointer[gortsplib.ServerStream]

	// frameInterval overrides the pacing for tests (export_test.go); zero means real time.
	frameInterval time.Duration
	// sendBuffer, when set by a test (export_test.go), fixes SO_SNDBUF of accepted
	// connections, so that a client that stops reading fills it at once.
	sendBuffer int

	// Counters, updated by gortsplib's handler callbacks.
	conns          atomic.Int64
	activeConns    atomic.Int64
	sessions       atomic.Int64
	activeSessions atomic.Int64
	plays          atomic.Int64
	authFailures   atomic.Int64
	dropped        atomic.Int64
}

// Initialize validates the configuration, parses the embedded clip, starts listening and
// starts the stream. Everything that can fail happens here; on error nothing is left
// running.
func (s *Server) Initialize() error {
	if s.Addr == "" {
		s.Addr = DefaultAddr
	}
	if s.Path == "" {
		s.Path = DefaultPath
	}
	if !strings.HasPrefix(s.Path, "/") {
		s.Path = "/" + s.Path
	}
	if strings.ContainsAny(s.Path, "?# ") || s.Path == "/" {
		return fmt.Errorf("invalid path %q: want a non-empty path without query, fragment or spaces", s.Path)
	}
	if s.Pass != "" && s.User == "" {
		return errors.New("a password was given without a user name")
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}

	var err error
	s.clip, err = parseClip(clipH264)
	if err != nil {
		return fmt.Errorf("failed to load the embedded clip: %w", err)
	}

	forma := &format.H264{
		PayloadTyp:        payloadType,
		SPS:               s.clip.sps,
		PPS:               s.clip.pps,
		PacketizationMode: 1,
	}
	s.enc, err = forma.CreateEncoder()
	if err != nil {
		return fmt.Errorf("failed to create the RTP encoder: %w", err)
	}
	s.media = &description.Media{
		Type:    description.MediaTypeVideo,
		Formats: []format.Format{forma},
	}

	rtsp := &gortsplib.Server{
		Handler:     &handler{s: s},
		RTSPAddress: s.Addr,
		// No UDPRTPAddress/UDPRTCPAddress: TCP only, see the package doc.
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err != nil {
				return nil, err
			}
			s.ln = ln
			if s.sendBuffer > 0 {
				return &sendBufferListener{Listener: ln, size: s.sendBuffer}, nil
			}
			return ln, nil
		},
	}
	if err := rtsp.Start(); err != nil {
		return fmt.Errorf("failed to start the RTSP server on %s: %w", s.Addr, err)
	}
	s.rtsp = rtsp

	s.stream = &gortsplib.ServerStream{
		Server: s.rtsp,
		Desc: &description.Session{
			Title:  "camerasim",
			Medias: []*description.Media{s.media},
		},
	}
	if err := s.stream.Initialize(); err != nil {
		s.rtsp.Close()
		s.rtsp, s.stream = nil, nil
		return fmt.Errorf("failed to create the stream: %w", err)
	}

	s.published.Store(s.stream)

	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.runStreamer(s.ctx)
	}()

	s.Logger.Info("camera listening", "url", s.URL(), "auth", s.User != "",
		"pictures", len(s.clip.aus), "fps", clipFPS)
	return nil
}

// Close stops the stream, closes every client connection and the listener, and waits
// for the server's goroutines to exit. It may be called more than once, and also when
// Initialize failed or was never called.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
			s.wg.Wait()
		}
		if s.stream != nil {
			s.stream.Close()
		}
		if s.rtsp != nil {
			s.rtsp.Close()
		}
	})
}

// ListenAddr returns the address the server listens on, e.g. "127.0.0.1:41234", with
// the actual port when Addr asked for port 0. It is valid after Initialize succeeded.
func (s *Server) ListenAddr() string {
	return s.ln.Addr().String()
}

// URL returns the stream's URL without credentials, e.g. rtsp://127.0.0.1:41234/stream.
// An unspecified listen host (":8554", "0.0.0.0") is given as 127.0.0.1.
func (s *Server) URL() string {
	host, port, err := net.SplitHostPort(s.ListenAddr())
	if err != nil {
		return "rtsp://" + s.ListenAddr() + s.Path
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "rtsp://" + net.JoinHostPort(host, port) + s.Path
}

// Conns returns how many TCP connections the server has accepted so far.
func (s *Server) Conns() int64 { return s.conns.Load() }

// ActiveConns returns how many TCP connections are open now. A test can wait for it to
// drop to zero to see that a client (or a tunnel) really hung up on the camera.
func (s *Server) ActiveConns() int64 { return s.activeConns.Load() }

// Sessions returns how many RTSP sessions were started so far (a SETUP accepted).
func (s *Server) Sessions() int64 { return s.sessions.Load() }

// ActiveSessions returns how many RTSP sessions are open now.
func (s *Server) ActiveSessions() int64 { return s.activeSessions.Load() }

// Plays returns how many PLAY requests were accepted so far, that is how many sessions
// started receiving video.
func (s *Server) Plays() int64 { return s.plays.Load() }

// AuthFailures returns how many requests carried credentials that were refused. The 401
// challenge that a client gets before it sends any credentials is not counted.
func (s *Server) AuthFailures() int64 { return s.authFailures.Load() }

// Dropped returns how many RTP packets were dropped so far because a client did not
// keep up (its write queue of 256 packets was full). A frozen tunnel shows up here
// instead of slowing the camera down.
func (s *Server) Dropped() int64 { return s.dropped.Load() }

// sendBufferListener sets the send buffer size of the connections it accepts.
type sendBufferListener struct {
	net.Listener
	size int
}

func (l *sendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(l.size)
	}
	return c, err
}
