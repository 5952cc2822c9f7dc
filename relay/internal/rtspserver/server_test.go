package rtspserver_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/auth"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/rtspserver"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/upstream"
)

// These tests run the server in process, end to end: gortsplib players
// against the relay's RTSP port, and a real RTSP camera (gortsplib's
// server, one H.264 media, a synthetic RTP packet every few milliseconds)
// behind each camera's upstream, reached over plain TCP in place of the
// tunnel. They poll against the test's deadline instead of sleeping, and
// time only bounds from below.

const (
	realm     = "rtsptunnel"
	alicePass = "alice-Secret-1"
	bobPass   = "bob-Secret-2"
)

// testUsers returns alice and bob. Players use Digest, which only needs
// HA1; the Basic hash is bcrypt at its lowest cost, since HashPassword's
// cost 12 takes seconds under the race detector.
func testUsers(t *testing.T) []auth.User {
	t.Helper()
	var out []auth.User
	for _, np := range [][2]string{{"alice", alicePass}, {"bob", bobPass}} {
		ha1 := md5.Sum([]byte(np[0] + ":" + realm + ":" + np[1]))
		hash, err := bcrypt.GenerateFromPassword([]byte(np[1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, auth.User{Name: np[0], HA1: hex.EncodeToString(ha1[:]), Hash: string(hash)})
	}
	return out
}

// testTimeout is every test's deadline.
const testTimeout = 30 * time.Second

// sndbufListener fixes the send buffer of the connections it accepts, so
// that a player that stops reading fills it at once instead of after
// megabytes of loopback autotuning.
type sndbufListener struct {
	net.Listener
	size int
}

func (l *sndbufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(l.size)
	}
	return c, err
}

type env struct {
	cam   *testutil.Camera
	dials atomic.Int64 // every camera's tunnels
	srv   *rtspserver.Server
	m     *metrics.Metrics
	logs  *testutil.LogBuffer
}

type envOptions struct {
	// cameras maps camera names to their Users; nil means {"door": {"alice"}}.
	cameras map[string][]string
	// sndbuf, when set, fixes the send buffer of players' connections.
	sndbuf int
	// mod adjusts the server before Initialize.
	mod func(*rtspserver.Server)
}

// newEnv starts a camera and the server, each camera of which reads that
// camera through a counting dialer.
func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	// The camera: H.264, a 1 KB packet every 5 ms.
	e := &env{cam: testutil.NewCamera(t, testutil.CameraOptions{PayloadSize: 1000}), logs: &testutil.LogBuffer{}}
	var err error
	if e.m, err = metrics.New(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	if o.cameras == nil {
		o.cameras = map[string][]string{"door": {"alice"}}
	}
	ln := testutil.Listen(t)
	if o.sndbuf > 0 {
		ln = &sndbufListener{Listener: ln, size: o.sndbuf}
	}
	v := &auth.Verifier{Realm: realm, Users: testUsers(t)}
	if err := v.Initialize(); err != nil {
		t.Fatal(err)
	}
	e.srv = &rtspserver.Server{
		Listener:        ln,
		Verifier:        v,
		Limiter:         &auth.Limiter{},
		DescribeTimeout: 10 * time.Second,
		Logger:          e.logs.Logger(slog.LevelDebug),
		Metrics:         e.m,
	}
	for name, users := range o.cameras {
		e.m.InitCamera(name, true)
		e.srv.Cameras = append(e.srv.Cameras, &rtspserver.Camera{
			Name:  name,
			Users: users,
			Upstream: upstream.Source{
				Camera: name,
				URL:    &base.URL{Scheme: "rtsp", Host: "localhost:554", Path: testutil.CameraPath},
				Dial: func(ctx context.Context) (net.Conn, error) {
					e.dials.Add(1)
					var d net.Dialer
					return d.DialContext(ctx, "tcp", e.cam.Addr())
				},
				Linger:          300 * time.Millisecond,
				ReconnectWindow: 10 * time.Second,
				RetryMin:        10 * time.Millisecond,
				RetryMax:        50 * time.Millisecond,
			},
		})
	}
	if o.mod != nil {
		o.mod(e.srv)
	}
	if err := e.srv.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.srv.Close()
		if t.Failed() {
			t.Logf("relay logs:\n%s", e.logs.String())
		}
	})
	return e
}

// url returns the relay's URL for path, with user:pass when user is set.
func (e *env) url(path, user, pass string) string {
	cred := ""
	if user != "" {
		cred = user + ":" + pass + "@"
	}
	return "rtsp://" + cred + e.srv.Addr().String() + "/" + path
}

func (e *env) camera(name string) *rtspserver.Camera {
	for _, c := range e.srv.Cameras {
		if c.Name == name {
			return c
		}
	}
	panic("no camera " + name)
}

func (e *env) viewers(cam string) float64 {
	return promtest.ToFloat64(e.m.Viewers.WithLabelValues(cam))
}

func (e *env) dropped(cam string) float64 {
	return promtest.ToFloat64(e.m.PlayerDropped.WithLabelValues(cam))
}

func (e *env) refused() map[string]float64 {
	out := map[string]float64{}
	for _, r := range metrics.Refusals {
		out[r] = promtest.ToFloat64(e.m.Refused.WithLabelValues(r))
	}
	return out
}

// checkRefused fails unless relay_rtsp_refused_total grew by want since
// before, for every reason (zero when absent from want).
func (e *env) checkRefused(t *testing.T, before, want map[string]float64) {
	t.Helper()
	now := e.refused()
	for _, r := range metrics.Refusals {
		if got := now[r] - before[r]; got != want[r] {
			t.Errorf("relay_rtsp_refused_total{reason=%q} grew by %v, want %v", r, got, want[r])
		}
	}
}

// player is a gortsplib client playing a relay URL over TCP.
type player struct {
	c       *gortsplib.Client
	packets atomic.Int64
	once    sync.Once
}

type playerOptions struct {
	// onPacket runs in the client's reader for every RTP packet; blocking
	// in it stops the player reading.
	onPacket func()
	// dial replaces the client's dialer.
	dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// play runs OPTIONS, DESCRIBE, SETUP and PLAY like any player would. On
// success the player is closed at cleanup (or by close).
func play(t *testing.T, rawURL string, o playerOptions) (*player, error) {
	t.Helper()
	u, err := base.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	tcp := gortsplib.TransportTCP
	p := &player{c: &gortsplib.Client{
		Scheme:      u.Scheme,
		Host:        u.Host,
		Transport:   &tcp,
		ReadTimeout: 10 * time.Second,
		DialContext: o.dial,
		// Keep gortsplib from logging through the log package; a
		// reconnect upstream shows as lost packets.
		OnPacketsLost: func(uint64) {},
		OnDecodeError: func(error) {},
	}}
	if err := p.c.Start2(); err != nil {
		return nil, err
	}
	if err := p.start(u, o.onPacket); err != nil {
		p.c.Close()
		return nil, err
	}
	t.Cleanup(p.close)
	return p, nil
}

func (p *player) start(u *base.URL, onPacket func()) error {
	desc, _, err := p.c.Describe(u)
	if err != nil {
		return err
	}
	if err := p.c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		return err
	}
	p.c.OnPacketRTPAny(func(*description.Media, format.Format, *rtp.Packet) {
		p.packets.Add(1)
		if onPacket != nil {
			onPacket()
		}
	})
	_, err = p.c.Play(nil)
	return err
}

func (p *player) close() { p.once.Do(p.c.Close) }

// mustPlay is play that fails the test on error.
func mustPlay(t *testing.T, rawURL string, o playerOptions) *player {
	t.Helper()
	p, err := play(t, rawURL, o)
	if err != nil {
		t.Fatalf("play %s: %v", rawURL, err)
	}
	return p
}

// TestSharedCamera: players with valid Digest credentials all get the
// camera's packets through one tunnel; viewers are counted while they play
// and the upstream closes after they leave.
func TestSharedCamera(t *testing.T) {
	const players = 5
	testutil.CheckGoroutines(t)
	ctx := testutil.Context(t, testTimeout)
	e := newEnv(t, envOptions{})
	before := e.refused()

	ps := make([]*player, players)
	errs := make([]error, players)
	var wg sync.WaitGroup
	for i := range players {
		wg.Go(func() { ps[i], errs[i] = play(t, e.url("door", "alice", alicePass), playerOptions{}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("player %d: %v", i, err)
		}
	}
	for _, p := range ps {
		testutil.WaitFor(ctx, t, "packets for every player", func() bool { return p.packets.Load() >= 20 })
	}
	if n := e.dials.Load(); n != 1 {
		t.Errorf("%d tunnels for %d players, want 1", n, players)
	}
	if n := e.cam.Active(); n != 1 {
		t.Errorf("camera has %d connections, want 1", n)
	}
	testutil.WaitFor(ctx, t, "relay_viewers == 5", func() bool { return e.viewers("door") == players })
	testutil.WaitFor(ctx, t, "the upstream live with 5 holds", func() bool {
		st := e.camera("door").Upstream.Status()
		return st.State == metrics.StateLive && st.Holds == players
	})
	if got := promtest.ToFloat64(e.m.PlayerBytes.WithLabelValues("door")); got <= 0 {
		t.Errorf("relay_player_bytes_total = %v, want > 0", got)
	}
	// The first, credential-less request of each player is a challenge,
	// not a refusal.
	e.checkRefused(t, before, nil)

	for _, p := range ps {
		p.close()
	}
	testutil.WaitFor(ctx, t, "relay_viewers == 0", func() bool { return e.viewers("door") == 0 })
	testutil.WaitFor(ctx, t, "the upstream to close after the linger", func() bool {
		st := e.camera("door").Upstream.Status()
		return st.Holds == 0 && st.State == metrics.StateIdle && e.cam.Active() == 0
	})
	if n := e.dials.Load(); n != 1 {
		t.Errorf("%d tunnels, want 1", n)
	}
}

// TestRefusals: requests that fail authentication or authorization are
// answered without opening a tunnel, and counted by reason.
func TestRefusals(t *testing.T) {
	testutil.CheckGoroutines(t)
	e := newEnv(t, envOptions{})
	tests := []struct {
		name       string
		path       string
		user, pass string
		wantStatus string
		want       map[string]float64 // refusals counted
	}{
		{name: "no credentials", path: "door", wantStatus: "401"},
		{name: "wrong password", path: "door", user: "alice", pass: "not-" + alicePass, wantStatus: "401",
			want: map[string]float64{metrics.RefusedBadCredentials: 1}},
		{name: "unknown user", path: "door", user: "mallory", pass: alicePass, wantStatus: "401",
			want: map[string]float64{metrics.RefusedBadCredentials: 1}},
		{name: "user not allowed on the camera", path: "door", user: "bob", pass: bobPass, wantStatus: "403",
			want: map[string]float64{metrics.RefusedForbidden: 1}},
		{name: "unknown camera", path: "garage", user: "alice", pass: alicePass, wantStatus: "404",
			want: map[string]float64{metrics.RefusedNotFound: 1}},
		// Camera names are not revealed before authentication.
		{name: "unknown camera without credentials", path: "garage", wantStatus: "401"},
		{name: "unknown camera, wrong password", path: "garage", user: "alice", pass: "nope", wantStatus: "401",
			want: map[string]float64{metrics.RefusedBadCredentials: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.refused()
			p, err := play(t, e.url(tt.path, tt.user, tt.pass), playerOptions{})
			if err == nil {
				p.close()
				t.Fatal("the player was let in")
			}
			if !strings.Contains(err.Error(), tt.wantStatus) {
				t.Fatalf("play: %v, want status %s", err, tt.wantStatus)
			}
			e.checkRefused(t, before, tt.want)
		})
	}
	if n := e.dials.Load(); n != 0 {
		t.Errorf("%d tunnels opened for refused players, want 0", n)
	}
	if st := e.camera("door").Upstream.Status(); st.State != metrics.StateIdle || st.Holds != 0 {
		t.Errorf("upstream Status() = %+v, want idle without holds", st)
	}
	for _, secret := range []string{alicePass, bobPass, "not-" + alicePass} {
		if strings.Contains(e.logs.String(), secret) {
			t.Errorf("the logs contain the password %q", secret)
		}
	}
}

// TestRateLimited: after Burst failures from one address, even correct
// credentials are answered 503 without being checked.
func TestRateLimited(t *testing.T) {
	testutil.CheckGoroutines(t)
	e := newEnv(t, envOptions{mod: func(s *rtspserver.Server) { s.Limiter = &auth.Limiter{Burst: 2, Every: time.Hour} }})
	for i := range 2 {
		if _, err := play(t, e.url("door", "alice", "wrong"), playerOptions{}); err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("attempt %d: %v, want 401", i, err)
		}
	}
	before := e.refused()
	_, err := play(t, e.url("door", "alice", alicePass), playerOptions{})
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("play with the right password while limited: %v, want 503", err)
	}
	e.checkRefused(t, before, map[string]float64{metrics.RefusedRateLimited: 1})
	if n := e.dials.Load(); n != 0 {
		t.Errorf("%d tunnels, want 0", n)
	}
}

// TestSlowPlayer: a player that stops reading loses packets (counted) while
// another keeps up with the camera.
func TestSlowPlayer(t *testing.T) {
	testutil.CheckGoroutines(t)
	ctx := testutil.Context(t, testTimeout)
	e := newEnv(t, envOptions{
		sndbuf: 4096,
		mod:    func(s *rtspserver.Server) { s.WriteQueueSize = 16 },
	})

	fast := mustPlay(t, e.url("door", "alice", alicePass), playerOptions{})

	var freeze atomic.Bool
	frozen, unfreeze := make(chan struct{}), make(chan struct{})
	var frozenOnce sync.Once
	slow := mustPlay(t, e.url("door", "alice", alicePass), playerOptions{
		onPacket: func() {
			if freeze.Load() {
				frozenOnce.Do(func() { close(frozen) })
				<-unfreeze
			}
		},
		dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, address)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			return c, err
		},
	})
	// Registered after the player's Close, so it runs first: the client
	// cannot close while its reader is stuck in the callback.
	t.Cleanup(func() { close(unfreeze) })

	testutil.WaitFor(ctx, t, "both players to receive", func() bool { return fast.packets.Load() > 10 && slow.packets.Load() > 10 })
	freeze.Store(true)
	select {
	case <-frozen:
	case <-ctx.Done():
		t.Fatal("the slow player got no packet")
	}
	testutil.WaitFor(ctx, t, "packets dropped for the slow player", func() bool { return e.dropped("door") > 0 })

	// The slow player stays frozen in its callback (its socket and queue
	// full) while the fast one gets 400 more packets (2 s of the camera).
	// Were the relay paced by the slow player, the fast one would get
	// none until the test's deadline: an outcome, not a rate, decides, so
	// a loaded machine only makes it slower.
	const window = 400
	f0 := fast.packets.Load()
	testutil.WaitFor(ctx, t, fmt.Sprintf("the fast player to get %d packets while the slow one is frozen", window), func() bool {
		return fast.packets.Load()-f0 >= window
	})
	if n := e.viewers("door"); n != 2 {
		t.Errorf("relay_viewers = %v, want 2", n)
	}
	if n := e.dials.Load(); n != 1 {
		t.Errorf("%d tunnels, want 1", n)
	}
	if !strings.Contains(e.logs.String(), "player is too slow") {
		t.Error("no log line for the slow player")
	}
}

// TestPlayerLimits: a player over the limit is refused with 503 without
// another tunnel, and gets in once a place is free.
func TestPlayerLimits(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*rtspserver.Server)
	}{
		{"per camera", func(s *rtspserver.Server) { s.MaxPlayersPerCamera = 2 }},
		{"total", func(s *rtspserver.Server) { s.MaxPlayers = 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			ctx := testutil.Context(t, testTimeout)
			e := newEnv(t, envOptions{mod: tt.mod})
			url := e.url("door", "alice", alicePass)
			p1 := mustPlay(t, url, playerOptions{})
			mustPlay(t, url, playerOptions{})
			before := e.refused()
			_, err := play(t, url, playerOptions{})
			if err == nil || !strings.Contains(err.Error(), "503") {
				t.Fatalf("third player: %v, want 503", err)
			}
			e.checkRefused(t, before, map[string]float64{metrics.RefusedLimit: 1})
			if n := e.dials.Load(); n != 1 {
				t.Errorf("%d tunnels, want 1", n)
			}

			// A player leaving frees its place (the relay sees the
			// connection close a little later).
			p1.close()
			var p3 *player
			testutil.WaitFor(ctx, t, "a third player to get in", func() bool {
				p3, err = play(t, url, playerOptions{})
				return err == nil
			})
			testutil.WaitFor(ctx, t, "packets for the new player", func() bool { return p3.packets.Load() > 0 })
			if n := e.dials.Load(); n != 1 {
				t.Errorf("%d tunnels, want 1", n)
			}
		})
	}
}

// TestAnonymous: with AllowAnonymous, a camera without users plays without
// credentials, while a camera with users still asks for them.
func TestAnonymous(t *testing.T) {
	testutil.CheckGoroutines(t)
	ctx := testutil.Context(t, testTimeout)
	e := newEnv(t, envOptions{
		cameras: map[string][]string{"lobby": nil, "door": {"alice"}},
		mod:     func(s *rtspserver.Server) { s.AllowAnonymous = true },
	})
	tests := []struct {
		name, path, user, pass string
		wantErr                string // "" means it plays
	}{
		{"anonymous on an open camera", "lobby", "", "", ""},
		{"a user on an open camera", "lobby", "bob", bobPass, ""},
		{"anonymous on a camera with users", "door", "", "", "401"},
		{"its user on a camera with users", "door", "alice", alicePass, ""},
		// Protected cameras exist, so an unknown name must not be told
		// apart from them before authentication.
		{"anonymous on an unknown path", "nosuch", "", "", "401"},
		{"a user on an unknown path", "nosuch", "alice", alicePass, "404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := play(t, e.url(tt.path, tt.user, tt.pass), playerOptions{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("play: %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("play: %v", err)
			}
			testutil.WaitFor(ctx, t, "packets", func() bool { return p.packets.Load() > 0 })
			p.close()
		})
	}
}

// TestInitializeErrors: misconfigurations are refused before anything
// starts.
func TestInitializeErrors(t *testing.T) {
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cam := func(users []string) *rtspserver.Camera {
		return &rtspserver.Camera{Name: "door", Users: users, Upstream: upstream.Source{
			Camera: "door",
			URL:    &base.URL{Scheme: "rtsp", Host: "localhost:554", Path: testutil.CameraPath},
			Dial:   func(context.Context) (net.Conn, error) { return nil, errors.New("unused") },
		}}
	}
	tests := []struct {
		name string
		mod  func(*rtspserver.Server)
	}{
		{"no listener", func(s *rtspserver.Server) { s.Listener = nil }},
		{"no limiter", func(s *rtspserver.Server) { s.Limiter = nil }},
		{"no describe timeout", func(s *rtspserver.Server) { s.DescribeTimeout = 0 }},
		{"camera without users, anonymous off", func(s *rtspserver.Server) { s.Cameras = []*rtspserver.Camera{cam(nil)} }},
		{"users without a verifier", func(s *rtspserver.Server) { s.Verifier = nil }},
		{"bad write queue size", func(s *rtspserver.Server) { s.WriteQueueSize = 100 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			ln := testutil.Listen(t)
			v := &auth.Verifier{Realm: realm}
			if err := v.Initialize(); err != nil {
				t.Fatal(err)
			}
			s := &rtspserver.Server{
				Listener: ln, Cameras: []*rtspserver.Camera{cam([]string{"alice"})},
				Verifier: v, Limiter: &auth.Limiter{}, DescribeTimeout: time.Second,
				Logger: slog.New(slog.DiscardHandler), Metrics: m,
			}
			tt.mod(s)
			if err := s.Initialize(); err == nil {
				s.Close()
				t.Fatal("Initialize succeeded")
			}
		})
	}
}

// TestCameraDropKeepsPlayers: when the camera drops the tunnel, the
// upstream reconnects and the players keep receiving on their sessions.
func TestCameraDropKeepsPlayers(t *testing.T) {
	testutil.CheckGoroutines(t)
	ctx := testutil.Context(t, testTimeout)
	e := newEnv(t, envOptions{})
	ps := []*player{
		mustPlay(t, e.url("door", "alice", alicePass), playerOptions{}),
		mustPlay(t, e.url("door", "alice", alicePass), playerOptions{}),
	}
	for _, p := range ps {
		testutil.WaitFor(ctx, t, "packets", func() bool { return p.packets.Load() > 10 })
	}
	e.cam.Drop()
	restarts := func() float64 { return promtest.ToFloat64(e.m.UpstreamRestarts.WithLabelValues("door")) }
	testutil.WaitFor(ctx, t, "a restart", func() bool { return restarts() == 1 })
	testutil.WaitFor(ctx, t, "the upstream to be live again", func() bool {
		return e.dials.Load() == 2 && e.camera("door").Upstream.Status().State == metrics.StateLive
	})
	counts := []int64{ps[0].packets.Load(), ps[1].packets.Load()}
	for i, p := range ps {
		testutil.WaitFor(ctx, t, "packets after the reconnect", func() bool { return p.packets.Load() >= counts[i]+20 })
	}
	if n := e.viewers("door"); n != 2 {
		t.Errorf("relay_viewers = %v, want 2", n)
	}
	if got := restarts(); got != 1 {
		t.Errorf("relay_upstream_restarts_total = %v, want 1", got)
	}
}

// TestMaxSessionDuration: a playing session ends when it reaches
// MaxSessionDuration, and the viewer is counted out.
func TestMaxSessionDuration(t *testing.T) {
	testutil.CheckGoroutines(t)
	ctx := testutil.Context(t, testTimeout)
	// 2 s from PLAY: far beyond the first packet's arrival on a loaded
	// machine (the upstream is open by then), so the player sees packets
	// before the session ends; the end itself is awaited, not timed.
	e := newEnv(t, envOptions{mod: func(s *rtspserver.Server) { s.MaxSessionDuration = 2 * time.Second }})
	p, err := play(t, e.url("door", "alice", alicePass), playerOptions{})
	if err != nil {
		t.Fatalf("play: %v", err)
	}
	defer p.close()
	testutil.WaitFor(ctx, t, "packets", func() bool { return p.packets.Load() > 0 })
	ended := make(chan error, 1)
	go func() { ended <- p.c.Wait() }()
	select {
	case err := <-ended:
		t.Logf("player ended: %v", err)
	case <-ctx.Done():
		t.Fatal("the session outlived maxSessionDuration until the test's deadline")
	}
	testutil.WaitFor(ctx, t, "the viewer counted out", func() bool { return e.viewers("door") == 0 })
	if !strings.Contains(e.logs.String(), "player session reached maxSessionDuration") {
		t.Error("no log line for the ended session")
	}
}
