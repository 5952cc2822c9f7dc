package camera

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
)

// startServer initializes s and closes it at the end of the test.
func startServer(t *testing.T, s *Server) *Server {
	t.Helper()
	if err := s.Initialize(); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// received is what a gortsplib client saw of the stream.
type received struct {
	mu         sync.Mutex
	aus        []receivedAU
	seqGaps    int
	lastSeq    uint16
	havePacket bool
	err        error
}

type receivedAU struct {
	ts  uint32
	idr bool
}

func (r *received) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.aus)
}

// play pulls rawURL with gortsplib over TCP until want access units arrived or ctx ends.
// It checks the SDP against the clip and returns what was received.
func play(ctx context.Context, t *testing.T, rawURL string, want int) *received {
	t.Helper()
	u, err := base.ParseURL(rawURL)
	if err != nil {
		t.Fatalf("ParseURL: %v", err)
	}
	tcp := gortsplib.TransportTCP
	c := gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &tcp}
	if err := c.Start2(); err != nil {
		t.Fatalf("Start2: %v", err)
	}
	defer c.Close()

	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatalf("DESCRIBE: %v", err)
	}
	var forma *format.H264
	medi := desc.FindFormat(&forma)
	if medi == nil {
		t.Fatalf("no H.264 media in the SDP")
	}
	want0, err := parseClip(clipH264)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(forma.SPS, want0.sps) || !bytes.Equal(forma.PPS, want0.pps) {
		t.Errorf("SDP parameter sets differ from the clip's")
	}
	if forma.PacketizationMode != 1 {
		t.Errorf("packetization-mode = %d, want 1", forma.PacketizationMode)
	}
	dec, err := forma.CreateDecoder()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
		t.Fatalf("SETUP: %v", err)
	}

	r := &received{}
	c.OnPacketRTP(medi, forma, func(pkt *rtp.Packet) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.havePacket && pkt.SequenceNumber != r.lastSeq+1 {
			r.seqGaps++
		}
		r.havePacket, r.lastSeq = true, pkt.SequenceNumber
		au, err := dec.Decode(pkt)
		switch {
		case errors.Is(err, rtph264.ErrMorePacketsNeeded), errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious):
			return
		case err != nil:
			if r.err == nil {
				r.err = err
			}
			return
		}
		r.aus = append(r.aus, receivedAU{ts: pkt.Timestamp, idr: h264.IsRandomAccess(au)})
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatalf("PLAY: %v", err)
	}
	waitFor(ctx, t, "access units", func() bool { return r.count() >= want })
	c.Close()

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		t.Errorf("RTP decode error: %v", r.err)
	}
	return r
}

// checkStream asserts that the access units form a continuous live stream: timestamps
// one frame apart, no lost packets, and keyframes.
func checkStream(t *testing.T, r *received) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seqGaps != 0 {
		t.Errorf("%d gaps in RTP sequence numbers", r.seqGaps)
	}
	idrs := 0
	for i, au := range r.aus {
		if au.idr {
			idrs++
		}
		if i > 0 && au.ts-r.aus[i-1].ts != frameTicks {
			t.Fatalf("access unit %d: timestamp step %d, want %d", i, au.ts-r.aus[i-1].ts, frameTicks)
		}
	}
	if idrs == 0 {
		t.Errorf("no IDR picture among %d access units", len(r.aus))
	}
}

func TestPlayGortsplib(t *testing.T) {
	tests := []struct {
		name       string
		user, pass string
		userinfo   string // credentials put in the URL
		want       int    // access units to wait for
		interval   time.Duration
	}{
		// 30 pictures include at least one IDR, whatever the phase the client joins at.
		{name: "open", want: 30},
		{name: "digest or basic credentials", user: "admin", pass: "s3cret:%@", userinfo: "admin:s3cret%3A%25%40", want: 30},
		// Faster pacing so that the clip loops (250 pictures) within the test.
		{name: "timestamps continue across loops", want: 2*ClipPictures() + 10, interval: 2 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			s := &Server{User: tt.user, Pass: tt.pass}
			s.SetFrameInterval(tt.interval)
			startServer(t, s)

			u := s.URL()
			if tt.userinfo != "" {
				u = strings.Replace(u, "rtsp://", "rtsp://"+tt.userinfo+"@", 1)
			}
			r := play(ctx, t, u, tt.want)
			checkStream(t, r)

			if got := s.Sessions(); got != 1 {
				t.Errorf("Sessions() = %d, want 1", got)
			}
			if got := s.Plays(); got != 1 {
				t.Errorf("Plays() = %d, want 1", got)
			}
			if got := s.AuthFailures(); got != 0 {
				t.Errorf("AuthFailures() = %d, want 0", got)
			}
			waitFor(ctx, t, "the camera to see the client hang up", func() bool {
				return s.ActiveConns() == 0 && s.ActiveSessions() == 0
			})
			if got := s.Conns(); got != 1 {
				t.Errorf("Conns() = %d, want 1", got)
			}
		})
	}
}

func TestDescribeRefused(t *testing.T) {
	s := startServer(t, &Server{Path: "cam1", User: "admin", Pass: "secret"})
	tests := []struct {
		name         string
		userinfo     string
		path         string
		wantStatus   base.StatusCode
		wantFailures int64 // AuthFailures increment
	}{
		{name: "no credentials", path: "/cam1", wantStatus: base.StatusUnauthorized},
		{name: "wrong password", userinfo: "admin:nope@", path: "/cam1", wantStatus: base.StatusUnauthorized, wantFailures: 1},
		{name: "wrong user", userinfo: "root:secret@", path: "/cam1", wantStatus: base.StatusUnauthorized, wantFailures: 1},
		{name: "unknown path", userinfo: "admin:secret@", path: "/cam2", wantStatus: base.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.AuthFailures()
			u, err := base.ParseURL("rtsp://" + tt.userinfo + s.ListenAddr() + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			c := gortsplib.Client{Scheme: u.Scheme, Host: u.Host}
			if err := c.Start2(); err != nil {
				t.Fatalf("Start2: %v", err)
			}
			defer c.Close()
			_, res, err := c.Describe(u)
			if err == nil {
				t.Fatalf("DESCRIBE succeeded, want status %d", tt.wantStatus)
			}
			if res == nil || res.StatusCode != tt.wantStatus {
				t.Fatalf("DESCRIBE: response %v, error %v; want status %d", res, err, tt.wantStatus)
			}
			if got := s.AuthFailures() - before; got != tt.wantFailures {
				t.Errorf("AuthFailures() grew by %d, want %d", got, tt.wantFailures)
			}
		})
	}
	if got := s.Sessions(); got != 0 {
		t.Errorf("Sessions() = %d, want 0", got)
	}
}

func TestSeveralCameras(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := startServer(t, &Server{Path: "/a"})
	b := startServer(t, &Server{Path: "/b", User: "u", Pass: "p"})
	if a.ListenAddr() == b.ListenAddr() {
		t.Fatalf("both cameras listen on %s", a.ListenAddr())
	}
	checkStream(t, play(ctx, t, a.URL(), 30))
	checkStream(t, play(ctx, t, strings.Replace(b.URL(), "rtsp://", "rtsp://u:p@", 1), 30))
	if a.Plays() != 1 || b.Plays() != 1 {
		t.Errorf("Plays() = %d and %d, want 1 each", a.Plays(), b.Plays())
	}
}

func TestCloseDisconnectsClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := &Server{}
	if err := s.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.ListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(ctx, t, "the connection", func() bool { return s.ActiveConns() == 1 })

	s.Close()
	s.Close() // idempotent

	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read after Close succeeded, want EOF or reset")
	} else if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("connection still open after Close: %v", err)
	}
	if _, err := net.Dial("tcp", s.ListenAddr()); err == nil {
		t.Errorf("dial after Close succeeded")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestInitializeErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tests := []struct {
		name    string
		s       *Server
		wantErr string
	}{
		{"password without user", &Server{Pass: "x"}, "without a user"},
		{"root path", &Server{Path: "/"}, "invalid path"},
		{"query in path", &Server{Path: "/a?b"}, "invalid path"},
		{"address in use", &Server{Addr: busy.Addr().String()}, "failed to start the RTSP server"},
		{"bad address", &Server{Addr: "127.0.0.1:99999"}, "failed to start the RTSP server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Initialize()
			defer tt.s.Close() // safe after a failed Initialize
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Initialize() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	s := startServer(t, &Server{Path: "cam"})
	host, _, err := net.SplitHostPort(s.ListenAddr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("ListenAddr() = %q, want 127.0.0.1:<port>", s.ListenAddr())
	}
	if want := "rtsp://" + s.ListenAddr() + "/cam"; s.URL() != want {
		t.Errorf("URL() = %q, want %q", s.URL(), want)
	}
	var zero Server
	zero.Close() // never initialized: no-op
}

// freezeConn is a client connection whose reads can be stopped, to play a client (or a
// tunnel) that stops reading without hanging up.
type freezeConn struct {
	net.Conn
	frozen chan struct{} // closed by freeze
	closed chan struct{} // closed by Close
	once   sync.Once
}

func (c *freezeConn) freeze() { close(c.frozen) }

func (c *freezeConn) Read(p []byte) (int, error) {
	select {
	case <-c.frozen:
		<-c.closed
		return 0, net.ErrClosed
	default:
		return c.Conn.Read(p)
	}
}

func (c *freezeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// TestFrozenClient checks the failure that matters for a tunnel: a client that stops
// reading makes the camera drop its packets, and does not stall the stream for others.
func TestFrozenClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := &Server{}
	s.SetFrameInterval(5 * time.Millisecond) // 8x real time
	s.SetSendBuffer(8 << 10)                 // and small socket buffers: the queue fills at once
	startServer(t, s)

	var fc *freezeConn
	u, err := base.ParseURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	tcp := gortsplib.TransportTCP
	frozen := gortsplib.Client{
		Scheme: u.Scheme, Host: u.Host, Transport: &tcp,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, address)
			if err != nil {
				return nil, err
			}
			// A small receive window, so that the camera's side fills up quickly.
			_ = conn.(*net.TCPConn).SetReadBuffer(4096)
			fc = &freezeConn{Conn: conn, frozen: make(chan struct{}), closed: make(chan struct{})}
			return fc, nil
		},
	}
	if err := frozen.Start2(); err != nil {
		t.Fatal(err)
	}
	defer frozen.Close()
	desc, _, err := frozen.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	if err := frozen.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	if _, err := frozen.Play(nil); err != nil {
		t.Fatal(err)
	}
	fc.freeze()

	st := time.Now()
	waitFor(ctx, t, "the camera to drop packets for the frozen client", func() bool { return s.Dropped() > 0 })
	t.Logf("first drop after %v", time.Since(st))
	r := play(ctx, t, s.URL(), 100) // another client still gets the stream
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := 1; i < len(r.aus); i++ {
		if r.aus[i].ts-r.aus[i-1].ts != frameTicks {
			t.Fatalf("the healthy client's stream has a gap at access unit %d", i)
		}
	}
	t.Logf("dropped %d packets for the frozen client", s.Dropped())
}
