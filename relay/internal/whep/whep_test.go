package whep_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/upstream"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/whep"
)

// The tests run a real RTSP camera (gortsplib's server sending H.264 access
// units, a keyframe every 10 frames, parameter sets only in its SDP), the
// shared upstream over a TCP connection as the tunnel, the WHEP server on
// loopback ports, and pion as the browser. They poll against the test's
// deadline and never decide by wall-clock bounds.

var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9, 0x20}
	testPPS = []byte{0x68, 0xcb, 0x8c, 0xb2}
)

// testTimeout is every test's deadline.
const testTimeout = 30 * time.Second

// testProfile is small and fast: 50 frames a second, a keyframe in 10.
var testProfile = testutil.CameraOptions{Interval: 20 * time.Millisecond, Frames: &testutil.Frames{IDR: 4000, P: 300, GOP: 10}}

// env is a camera, its shared upstream and a WHEP server.
type env struct {
	cam   *testutil.Camera
	src   *upstream.Source
	srv   *whep.Server
	http  *httptest.Server
	m     *metrics.Metrics
	reg   *prometheus.Registry
	dials atomic.Int64
	logs  *testutil.LogBuffer

	mu   sync.Mutex
	conn net.Conn // the last tunnel dialed
}

func h264Format() *format.H264 {
	return &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: testSPS, PPS: testPPS}
}

func newEnv(t testing.TB, forma format.Format, ice whep.ICE) *env {
	return newEnvWith(t, forma, ice, testProfile)
}

// newEnvWith is newEnv with a camera sending as prof says (its Format is
// set to forma).
func newEnvWith(t testing.TB, forma format.Format, ice whep.ICE, prof testutil.CameraOptions) *env {
	t.Helper()
	prof.Format = forma
	e := &env{cam: testutil.NewCamera(t, prof), logs: &testutil.LogBuffer{}, reg: prometheus.NewRegistry()}
	var err error
	if e.m, err = metrics.New(e.reg); err != nil {
		t.Fatal(err)
	}
	e.m.InitCamera("door", true)
	log := e.logs.Logger(slog.LevelDebug)
	relay := &gortsplib.Server{Handler: struct{}{}, RTSPAddress: "127.0.0.1:0"}
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(relay.Close)
	e.src = &upstream.Source{
		Camera: "door",
		URL:    &base.URL{Scheme: "rtsp", Host: "localhost:554", Path: testutil.CameraPath},
		Dial: func(ctx context.Context) (net.Conn, error) {
			e.dials.Add(1)
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", e.cam.Addr())
			e.mu.Lock()
			e.conn = c
			e.mu.Unlock()
			return c, err
		},
		Server: relay, Linger: 100 * time.Millisecond, ReconnectWindow: 5 * time.Second,
		Logger: log, Metrics: e.m,
	}
	e.srv = &whep.Server{
		Cameras: []*whep.Camera{{Name: "door", Users: []string{"alice"}, Source: e.src}},
		Authenticate: func(r *http.Request) (string, error) {
			switch r.Header.Get("Authorization") {
			case "":
				return "", whep.ErrUnauthenticated
			case "Bearer alice-token":
				return "alice", nil
			case "Bearer bob-token":
				return "bob", nil
			}
			return "", errors.New("invalid token")
		},
		ICE: ice, AcquireTimeout: 10 * time.Second, Logger: log, Metrics: e.m,
	}
	if err := e.srv.Initialize(); err != nil {
		t.Fatal(err)
	}
	if err := e.src.Initialize(); err != nil {
		t.Fatal(err)
	}
	e.http = httptest.NewServer(e.srv)
	t.Cleanup(func() {
		e.http.Close()
		e.srv.Close()
		e.src.Close()
		if t.Failed() {
			t.Logf("relay logs:\n%s", e.logs.String())
		}
	})
	return e
}

var loopbackUDP = whep.ICE{UDPListen: "127.0.0.1:0"}

// client is a pion peer playing like a browser: a recvonly H.264
// transceiver, non-trickle offer, packets collected from its track.
type client struct {
	pc      *webrtc.PeerConnection
	pkts    chan *rtp.Packet
	session string // the Location
}

func newClient(t testing.TB, tcp bool) *client {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	// Loopback only: the test sends nothing to other addresses.
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	if tcp {
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeTCP4})
	} else {
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c := &client{pc: pc, pkts: make(chan *rtp.Packet, 10000)}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			select {
			case c.pkts <- p:
			default:
			}
		}
	})
	return c
}

func (c *client) offer(t testing.TB) string {
	t.Helper()
	offer, err := c.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	done := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-done
	return c.pc.LocalDescription().SDP
}

// post sends body to url and returns the status, body and Location.
func post(t testing.TB, url, token, contentType string, body []byte) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header.Get("Location")
}

// play makes c a viewer of camera door.
func (e *env) play(t testing.TB, c *client) {
	t.Helper()
	status, answer, loc := post(t, e.http.URL+"/whep/door", "alice-token", "application/sdp", []byte(c.offer(t)))
	if status != http.StatusCreated {
		t.Fatalf("POST /whep/door: %d %s", status, answer)
	}
	if !strings.HasPrefix(loc, "/whep/door/") {
		t.Fatalf("Location %q", loc)
	}
	c.session = loc
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
}

// frames decodes the client's packets into access units until n
// keyframes arrived, checking each packet on the way.
func (c *client) frames(ctx context.Context, t testing.TB, keyframes int) (aus [][][]byte) {
	t.Helper()
	dec := &rtph264.Decoder{PacketizationMode: 1}
	if err := dec.Init(); err != nil {
		t.Fatal(err)
	}
	var lastSeq uint16
	first := true
	keys := 0
	for keys < keyframes {
		var p *rtp.Packet
		select {
		case p = <-c.pkts:
		case <-ctx.Done():
			t.Fatalf("%d keyframes received, want %d", keys, keyframes)
		}
		if len(p.Payload) > 1200 {
			t.Errorf("payload of %d bytes: over the 1200-byte WebRTC limit", len(p.Payload))
		}
		if !first && p.SequenceNumber != lastSeq+1 {
			t.Errorf("sequence number %d after %d: a hole", p.SequenceNumber, lastSeq)
		}
		first, lastSeq = false, p.SequenceNumber
		au, err := dec.Decode(p)
		if errors.Is(err, rtph264.ErrMorePacketsNeeded) {
			continue
		}
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if len(aus) == 0 && !h264.IsRandomAccess(au) {
			t.Fatalf("the first frame is not a keyframe: NAL types %v", naluTypes(au))
		}
		if h264.IsRandomAccess(au) {
			keys++
			if ts := naluTypes(au); len(ts) < 3 || ts[0] != h264.NALUTypeSPS || ts[1] != h264.NALUTypePPS {
				t.Errorf("keyframe without SPS and PPS in front: %v", ts)
			}
		}
		aus = append(aus, au)
	}
	return aus
}

func naluTypes(au [][]byte) []h264.NALUType {
	var ts []h264.NALUType
	for _, n := range au {
		ts = append(ts, h264.NALUType(n[0]&0x1f))
	}
	return ts
}

func (e *env) delete(t testing.TB, loc, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, e.http.URL+loc, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestPlay: a viewer over UDP and one over ICE-TCP each get the camera's
// H.264 starting at a keyframe with SPS and PPS in front, in packets that
// fit WebRTC, without holes; both share one upstream (one dial); DELETE
// ends a session, and the upstream closes after the last one.
func TestPlay(t *testing.T) {
	for _, tc := range []struct {
		name string
		ice  whep.ICE
		tcp  bool
	}{
		{"udp", loopbackUDP, false},
		{"tcp", whep.ICE{TCPListen: "127.0.0.1:0"}, true},
		{"udp and tcp, viewer on tcp", whep.ICE{UDPListen: "127.0.0.1:0", TCPListen: "127.0.0.1:0"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			ctx := testutil.Context(t, testTimeout)
			e := newEnv(t, h264Format(), tc.ice)
			a, b := newClient(t, tc.tcp), newClient(t, tc.tcp)
			e.play(t, a)
			e.play(t, b)
			a.frames(ctx, t, 3)
			b.frames(ctx, t, 3)
			if n := e.dials.Load(); n != 1 {
				t.Errorf("%d tunnels dialed for two viewers, want 1", n)
			}
			if v := promtest.ToFloat64(e.m.WebRTC.Viewers.WithLabelValues("door")); v != 2 {
				t.Errorf("relay_webrtc_viewers %v, want 2", v)
			}
			if p := promtest.ToFloat64(e.m.WebRTC.Packets.WithLabelValues("door")); p == 0 {
				t.Error("relay_webrtc_packets_sent_total is 0")
			}
			if got := e.delete(t, a.session, "bob-token"); got != http.StatusUnauthorized {
				t.Errorf("DELETE by another user: %d, want 401", got)
			}
			for _, c := range []*client{a, b} {
				if got := e.delete(t, c.session, "alice-token"); got != http.StatusOK {
					t.Errorf("DELETE: %d, want 200", got)
				}
			}
			if got := e.delete(t, a.session, "alice-token"); got != http.StatusNotFound {
				t.Errorf("second DELETE: %d, want 404", got)
			}
			testutil.WaitFor(ctx, t, "the upstream to close after the last viewer", func() bool {
				return e.src.Status().State == metrics.StateIdle
			})
			if v := promtest.ToFloat64(e.m.WebRTC.Viewers.WithLabelValues("door")); v != 0 {
				t.Errorf("relay_webrtc_viewers %v after both left", v)
			}
		})
	}
}

// TestJoinLive: a viewer joining a live stream gets the last keyframe
// first (it does not wait for the camera's next one), then the stream
// from the camera's next keyframe.
func TestJoinLive(t *testing.T) {
	testutil.CheckGoroutines(t)
	ctx := testutil.Context(t, testTimeout)
	e := newEnv(t, h264Format(), loopbackUDP)
	a := newClient(t, false)
	e.play(t, a)
	a.frames(ctx, t, 2)
	b := newClient(t, false)
	e.play(t, b)
	aus := b.frames(ctx, t, 2)
	// The cached keyframe, then nothing until the camera's next keyframe:
	// the frames between refer to ones this viewer never got.
	if len(aus) != 2 {
		t.Errorf("%d frames up to the second keyframe, want 2: the viewer got frames between the cached keyframe and the next", len(aus))
	}
}

// TestRefusals: bad requests get their 4xx with a reason, and none of
// them opens the camera.
func TestRefusals(t *testing.T) {
	testutil.CheckGoroutines(t)
	e := newEnv(t, h264Format(), loopbackUDP)
	c := newClient(t, false)
	good := []byte(c.offer(t))
	vp8 := []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\na=recvonly\r\n")
	for _, tc := range []struct {
		name, path, token, ctype string
		body                     []byte
		want                     int
		says                     string
	}{
		{"no token", "/whep/door", "", "application/sdp", good, 401, "log in"},
		{"bad token", "/whep/door", "forged", "application/sdp", good, 401, "log in"},
		{"no token, unknown camera", "/whep/nope", "", "application/sdp", good, 401, "log in"},
		{"user not allowed", "/whep/door", "bob-token", "application/sdp", good, 403, "may not watch"},
		{"unknown camera", "/whep/nope", "alice-token", "application/sdp", good, 404, "no such camera"},
		{"not sdp", "/whep/door", "alice-token", "application/json", good, 415, "application/sdp"},
		{"empty", "/whep/door", "alice-token", "application/sdp", nil, 400, "empty"},
		{"malformed", "/whep/door", "alice-token", "application/sdp", []byte("hello"), 400, "not valid SDP"},
		{"no h264", "/whep/door", "alice-token", "application/sdp", vp8, 400, "no H.264"},
		{"huge", "/whep/door", "alice-token", "application/sdp", bytes.Repeat([]byte("a=x\r\n"), whep.MaxOfferSize), 413, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := post(t, e.http.URL+tc.path, tc.token, tc.ctype, tc.body)
			if status != tc.want || !strings.Contains(body, tc.says) {
				t.Errorf("got %d %q, want %d saying %q", status, body, tc.want, tc.says)
			}
		})
	}
	req, _ := http.NewRequest(http.MethodPatch, e.http.URL+"/whep/door/abc", strings.NewReader("a=candidate"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PATCH: %d, want 405", res.StatusCode)
	}
	if n := e.dials.Load(); n != 0 {
		t.Errorf("refused offers dialed the camera %d times", n)
	}
	if v := promtest.ToFloat64(e.m.WebRTC.Refused.WithLabelValues(metrics.WebRTCUnauthorized)); v != 3 {
		t.Errorf("relay_webrtc_refused_total{reason=unauthorized} %v, want 3", v)
	}
}

// TestUnplayable: a camera sending H.265 gets 422 with a message naming
// the codec, the hold is given back, and the next offer is refused without
// opening the camera again.
func TestUnplayable(t *testing.T) {
	testutil.CheckGoroutines(t)
	ctx := testutil.Context(t, testTimeout)
	e := newEnv(t, &format.H265{PayloadTyp: 96}, loopbackUDP)
	c := newClient(t, false)
	offer := []byte(c.offer(t))
	for i := range 2 {
		status, body, _ := post(t, e.http.URL+"/whep/door", "alice-token", "application/sdp", offer)
		if status != http.StatusUnprocessableEntity || !strings.Contains(body, "H265") {
			t.Errorf("offer %d: %d %q, want 422 naming H265", i, status, body)
		}
	}
	if n := e.dials.Load(); n != 1 {
		t.Errorf("%d dials, want 1 (the codec is known after the first)", n)
	}
	st, _ := e.srv.Status("door")
	if st.Playable || !strings.Contains(st.Reason, "H265") {
		t.Errorf("status %+v: want unplayable with the reason", st)
	}
	testutil.WaitFor(ctx, t, "the upstream to close", func() bool { return e.src.Status().State == metrics.StateIdle })
}

// TestPublicIPs: the answer advertises the configured public address
// instead of the listener's.
func TestPublicIPs(t *testing.T) {
	testutil.CheckGoroutines(t)
	e := newEnv(t, h264Format(), whep.ICE{UDPListen: "127.0.0.1:0", TCPListen: "127.0.0.1:0", PublicIPs: []string{"203.0.113.7"}})
	c := newClient(t, false)
	status, answer, loc := post(t, e.http.URL+"/whep/door", "alice-token", "application/sdp", []byte(c.offer(t)))
	if status != http.StatusCreated {
		t.Fatalf("%d %s", status, answer)
	}
	_, udpPort, _ := net.SplitHostPort(e.srv.UDPAddr())
	_, tcpPort, _ := net.SplitHostPort(e.srv.TCPAddr())
	for _, want := range []string{"203.0.113.7 " + udpPort + " typ host", "tcp", "203.0.113.7 " + tcpPort + " typ host tcptype passive"} {
		if !strings.Contains(answer, want) {
			t.Errorf("answer lacks %q:\n%s", want, answer)
		}
	}
	if strings.Contains(answer, "127.0.0.1") {
		t.Errorf("answer names the private address:\n%s", answer)
	}
	if got := e.delete(t, loc, "alice-token"); got != http.StatusOK {
		t.Errorf("DELETE: %d", got)
	}
}

// TestReconnect: the tunnel drops under a WebRTC viewer; the upstream
// reconnects within its window and the viewer's stream goes on, without
// a hole in its numbering, resuming at a keyframe.
func TestReconnect(t *testing.T) {
	testutil.CheckGoroutines(t)
	ctx := testutil.Context(t, testTimeout)
	e := newEnv(t, h264Format(), loopbackUDP)
	c := newClient(t, false)
	e.play(t, c)
	c.frames(ctx, t, 2)
	e.mu.Lock()
	e.conn.Close()
	e.mu.Unlock()
	testutil.WaitFor(ctx, t, "the upstream to reconnect", func() bool {
		return e.dials.Load() == 2 && e.src.Status().State == metrics.StateLive
	})
	// Drop what arrived before the reconnect, then expect the stream to
	// start over at a keyframe.
	for len(c.pkts) > 0 {
		<-c.pkts
	}
	c.frames(ctx, t, 2)
	if v := promtest.ToFloat64(e.m.WebRTC.Viewers.WithLabelValues("door")); v != 1 {
		t.Errorf("relay_webrtc_viewers %v, want the viewer still there", v)
	}
}
