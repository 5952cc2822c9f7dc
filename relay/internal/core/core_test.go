package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/token"
)

type harness struct {
	t       *testing.T
	srv     *Server
	logs    *testutil.LogBuffer
	reg     *prometheus.Registry
	tokens  sync.Map // session id → token, as seen by the fake module
	modules sync.WaitGroup
}

// newHarness starts a Server whose Opener is open (set later through the
// returned harness if nil).
func newHarness(t *testing.T, open OpenerFunc, tweak func(*Server)) *harness {
	t.Helper()
	h := &harness{t: t, logs: &testutil.LogBuffer{}, reg: prometheus.NewRegistry()}
	m, err := metrics.New(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse("wss://relay.test:8443/prefix")
	h.srv = &Server{
		Logger:      h.logs.Logger(slog.LevelDebug),
		Metrics:     m,
		BaseURL:     base,
		SessionWait: 2 * time.Second,
		TokenTTL:    2 * time.Second,
		RejectGrace: 500 * time.Millisecond,
		Opener: OpenerFunc(func(ctx context.Context, camera string, req OpenRequest) (OpenResult, error) {
			h.tokens.Store(req.SessionID, req.Token)
			return open(ctx, camera, req)
		}),
	}
	if tweak != nil {
		tweak(h.srv)
	}
	if err := h.srv.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.srv.Close()
		h.modules.Wait()
		if strings.Contains(h.logs.String(), "tok-") {
			t.Error("a token appears in the logs")
		}
		for _, l := range strings.Split(h.logs.String(), "\n") {
			h.tokens.Range(func(_, v any) bool {
				if strings.Contains(l, v.(string)) {
					t.Errorf("log line contains a session token: %s", l)
				}
				return true
			})
		}
	})
	return h
}

// sessionID extracts the session id from an endpoint URL and checks its shape.
func sessionID(t *testing.T, endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "wss" || u.Host != "relay.test:8443" || path.Dir(u.Path) != "/prefix/tunnels" {
		t.Errorf("endpoint %q is not under wss://relay.test:8443/prefix/tunnels/", endpoint)
	}
	return path.Base(u.Path)
}

// dialBack is the fake module's websocket: it attaches one end of a pipe
// to the session and runs camera on the other end. It returns the error
// of AcceptModule's token check (nil when attached), without waiting for the
// tunnel to end.
func (h *harness) dialBack(req OpenRequest, tok string, camera func(net.Conn)) error {
	checked := make(chan error, 1)
	h.modules.Add(1)
	go func() {
		defer h.modules.Done()
		var upgraded bool
		err := h.srv.AcceptModule(sessionID(h.t, req.Endpoint), tok, func() (net.Conn, error) {
			upgraded = true
			relaySide, moduleSide := net.Pipe()
			h.modules.Add(1)
			go func() {
				defer h.modules.Done()
				defer moduleSide.Close()
				camera(moduleSide)
			}()
			checked <- nil
			return relaySide, nil
		})
		if !upgraded {
			checked <- err
		}
	}()
	return <-checked
}

func echo(c net.Conn) { io.Copy(c, c) }

// okModule dials back with the right token and answers 200.
func (h *harness) okModule(camera func(net.Conn)) OpenerFunc {
	return func(ctx context.Context, _ string, req OpenRequest) (OpenResult, error) {
		if err := h.dialBack(req, req.Token, camera); err != nil {
			return OpenResult{Status: 401, Body: json.RawMessage(`{"code":"401"}`)}, nil
		}
		return OpenResult{Status: 200, Body: json.RawMessage(`{"sessionId":"m1","target":"10.0.0.2:554"}`)}, nil
	}
}

// play runs HandlePlayer on a pipe and returns the player's end and a
// channel closed when HandlePlayer has returned.
func (h *harness) play(ctx context.Context, camera string) (net.Conn, <-chan struct{}) {
	relaySide, playerSide := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.srv.HandlePlayer(ctx, camera, relaySide)
	}()
	h.t.Cleanup(func() { playerSide.Close() })
	return playerSide, done
}

// testTimeout is every test's deadline.
const testTimeout = 10 * time.Second

// readAll reads from c until EOF or ctx ends.
func readAll(ctx context.Context, c net.Conn) ([]byte, error) {
	if d, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(d)
	}
	return io.ReadAll(c)
}

const options = "OPTIONS rtsp://127.0.0.1:8554/stream1 RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: test\r\n\r\n"

func TestSpliceEcho(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	var h *harness
	h = newHarness(t, func(ctx context.Context, c string, r OpenRequest) (OpenResult, error) {
		return h.okModule(echo)(ctx, c, r)
	}, nil)
	player, done := h.play(ctx, "cam1")

	// The request is written before the tunnel is up: it waits in the
	// prefetch buffer and must arrive first and unchanged.
	msgs := []string{options, strings.Repeat("x", 100000), "\x24\x00\x00\x04abcd"}
	for _, m := range msgs {
		go player.Write([]byte(m))
		got := make([]byte, len(m))
		// The test's deadline, not a few seconds: a lost message blocks
		// for ever, a loaded machine only for a while.
		deadline, _ := ctx.Deadline()
		player.SetReadDeadline(deadline)
		if _, err := io.ReadFull(player, got); err != nil {
			t.Fatalf("reading echo: %v", err)
		}
		if string(got) != m {
			t.Fatalf("echo %q, want %q", got[:min(len(got), 40)], m[:min(len(m), 40)])
		}
	}
	player.Close()
	testutil.Wait(ctx, t, done, "HandlePlayer")

	closed := h.logs.Records("session closed")
	if len(closed) != 1 {
		t.Fatalf("%d session closed lines, want 1:\n%s", len(closed), h.logs)
	}
	c := closed[0]
	total := float64(len(msgs[0]) + len(msgs[1]) + len(msgs[2]))
	if c["outcome"] != "ok" || c["camera"] != "cam1" || c["bytes_to_camera"] != total || c["bytes_to_player"] != total {
		t.Fatalf("closed line %v", c)
	}
	if len(h.logs.Records("session opened")) != 1 {
		t.Fatalf("want one session opened line:\n%s", h.logs)
	}
	if got := promtest.ToFloat64(h.srv.Metrics.SessionsTotal.WithLabelValues("cam1", "ok")); got != 1 {
		t.Fatalf("relay_sessions_total{ok} = %v", got)
	}
	if got := promtest.ToFloat64(h.srv.Metrics.PlayerBytes.WithLabelValues("cam1")); got != total {
		t.Fatalf("relay_player_bytes_total = %v, want %v", got, total)
	}
	if got := promtest.ToFloat64(h.srv.Metrics.EdgeBytes.WithLabelValues("cam1", "from_camera")); got != total {
		t.Fatalf("relay_edge_bytes_total{from_camera} = %v, want %v", got, total)
	}
	if got := promtest.ToFloat64(h.srv.Metrics.SessionsActive); got != 0 {
		t.Fatalf("relay_sessions_active = %v after the session", got)
	}
	if n := promtest.CollectAndCount(h.srv.Metrics.OpenDuration); n != 1 {
		t.Fatalf("open duration series %d", n)
	}
	if h.srv.Active() != 0 || h.srv.tokens.Len() != 0 {
		t.Fatalf("session state left: %d sessions, %d tokens", h.srv.Active(), h.srv.tokens.Len())
	}
}

func TestCameraEOFClosesPlayer(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	var h *harness
	h = newHarness(t, func(ctx context.Context, c string, r OpenRequest) (OpenResult, error) {
		return h.okModule(func(c net.Conn) { c.Write([]byte("RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n")) })(ctx, c, r)
	}, nil)
	player, done := h.play(ctx, "cam1")
	got, err := readAll(ctx, player)
	if err != nil || string(got) != "RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n" {
		t.Fatalf("player read %q, %v; want the camera's bytes then EOF", got, err)
	}
	testutil.Wait(ctx, t, done, "HandlePlayer")
	if c := h.logs.Records("session closed"); len(c) != 1 || c[0]["reason"] != "module closed the tunnel" {
		t.Fatalf("closed lines %v", c)
	}
}

type hubErr struct{ status int }

func (e hubErr) Error() string {
	return fmt.Sprintf("IoT Hub answered %d: {\"errorCode\":404103}", e.status)
}
func (e hubErr) HTTPStatus() int { return e.status }

func TestOpenFailures(t *testing.T) {
	tests := []struct {
		name        string
		open        OpenerFunc
		send        string // what the player sends first
		want503     bool
		outcome     string
		status      float64 // method_status in the log, 0 for none
		logContains string
		// bounded: the session must end within SessionWait (300 ms), not at
		// the test's deadline; see openFailuresBound.
		bounded bool
	}{
		{
			name: "module refuses",
			open: func(context.Context, string, OpenRequest) (OpenResult, error) {
				return OpenResult{400, json.RawMessage(`{"code":"400","target":"127.0.0.1:554","message":"Could not connect to RTSP endpoint"}`)}, nil
			},
			send: options, want503: true, outcome: metrics.OutcomeMethodFailed, status: 400,
			logContains: "Could not connect to RTSP endpoint",
		},
		{
			name: "device offline",
			open: func(context.Context, string, OpenRequest) (OpenResult, error) {
				return OpenResult{}, fmt.Errorf("failed to invoke method: %w", hubErr{404})
			},
			send: options, want503: true, outcome: metrics.OutcomeMethodError, status: 404,
			logContains: "404103",
		},
		{
			name: "module never connects",
			open: func(context.Context, string, OpenRequest) (OpenResult, error) {
				return OpenResult{200, json.RawMessage(`{"sessionId":"x"}`)}, nil
			},
			send: options, want503: true, outcome: metrics.OutcomeTimeout, status: 200,
			bounded: true,
		},
		{
			name: "method hangs",
			open: func(ctx context.Context, _ string, _ OpenRequest) (OpenResult, error) {
				<-ctx.Done()
				return OpenResult{}, ctx.Err()
			},
			send: options, want503: true, outcome: metrics.OutcomeTimeout,
			bounded: true,
		},
		{
			name: "no request, no reply",
			open: func(context.Context, string, OpenRequest) (OpenResult, error) {
				return OpenResult{502, json.RawMessage(`{"code":"502"}`)}, nil
			},
			want503: false, outcome: metrics.OutcomeMethodFailed, status: 502,
		},
		{
			name: "binary first bytes, no reply",
			open: func(context.Context, string, OpenRequest) (OpenResult, error) {
				return OpenResult{502, json.RawMessage(`{"code":"502"}`)}, nil
			},
			send: "\x24\x00\x00\x02hi\r\n\r\n", want503: false, outcome: metrics.OutcomeMethodFailed, status: 502,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A session that ignored SessionWait would end only when ctx
			// does (the player reads until ctx's deadline): a minute, three
			// times the bound, so the bound catches it; the 300 ms path is
			// sixty times shorter than the bound, which no load reaches.
			const openFailuresBound = 20 * time.Second
			ctx := testutil.Context(t, time.Minute)
			h := newHarness(t, tt.open, func(s *Server) { s.SessionWait = 300 * time.Millisecond })
			start := time.Now()
			player, done := h.play(ctx, "cam1")
			if tt.send != "" {
				go player.Write([]byte(tt.send))
			}
			got, _ := readAll(ctx, player)
			testutil.Wait(ctx, t, done, "HandlePlayer")
			if tt.bounded && time.Since(start) > openFailuresBound {
				t.Errorf("session took %v, want about SessionWait (300 ms), at most %v", time.Since(start), openFailuresBound)
			}
			if want := "RTSP/1.0 503 Service Unavailable\r\nCSeq: 1\r\n"; tt.want503 != strings.HasPrefix(string(got), want) {
				t.Errorf("player got %q; want 503 reply: %v", got, tt.want503)
			}
			if !tt.want503 && len(got) != 0 {
				t.Errorf("player got %q, want nothing", got)
			}
			closed := h.logs.Records("session closed")
			if len(closed) != 1 {
				t.Fatalf("%d session closed lines:\n%s", len(closed), h.logs)
			}
			c := closed[0]
			if c["outcome"] != tt.outcome || c["level"] != "WARN" {
				t.Errorf("outcome %v level %v, want %s WARN", c["outcome"], c["level"], tt.outcome)
			}
			if st, _ := c["method_status"].(float64); st != tt.status {
				t.Errorf("method_status %v, want %v", c["method_status"], tt.status)
			}
			line, _ := json.Marshal(c)
			if !strings.Contains(string(line), tt.logContains) {
				t.Errorf("log line %s lacks %q", line, tt.logContains)
			}
			if got := promtest.ToFloat64(h.srv.Metrics.SessionsTotal.WithLabelValues("cam1", tt.outcome)); got != 1 {
				t.Errorf("relay_sessions_total{%s} = %v", tt.outcome, got)
			}
			if h.srv.Active() != 0 || h.srv.tokens.Len() != 0 {
				t.Errorf("state left: %d sessions, %d tokens", h.srv.Active(), h.srv.tokens.Len())
			}
		})
	}
}

func TestPlayerGone(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	methodCanceled := make(chan struct{})
	h := newHarness(t, func(ctx context.Context, _ string, _ OpenRequest) (OpenResult, error) {
		<-ctx.Done()
		close(methodCanceled)
		return OpenResult{}, ctx.Err()
	}, nil)
	player, done := h.play(ctx, "cam1")
	player.Close()
	testutil.Wait(ctx, t, done, "HandlePlayer")
	testutil.Wait(ctx, t, methodCanceled, "the method call to be canceled")
	if c := h.logs.Records("session closed"); len(c) != 1 || c[0]["outcome"] != metrics.OutcomePlayerGone {
		t.Fatalf("closed lines %v", c)
	}
}

func TestTokenChecks(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	type attempt struct {
		tok  func(real string) string
		want error // nil: attached
	}
	tests := []struct {
		name     string
		attempts []attempt
	}{
		{"missing", []attempt{{func(string) string { return "" }, token.ErrMissing}}},
		{"wrong", []attempt{{func(string) string { return "tok-wrong" }, token.ErrMismatch}}},
		{"wrong then right", []attempt{
			{func(string) string { return "tok-wrong" }, token.ErrMismatch},
			{func(r string) string { return r }, nil},
		}},
		{"reused", []attempt{
			{func(r string) string { return r }, nil},
			{func(r string) string { return r }, token.ErrUsed},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h *harness
			results := make(chan error, len(tt.attempts))
			h = newHarness(t, func(ctx context.Context, _ string, req OpenRequest) (OpenResult, error) {
				for _, a := range tt.attempts {
					results <- h.dialBack(req, a.tok(req.Token), echo)
				}
				return OpenResult{Status: 200}, nil
			}, func(s *Server) { s.SessionWait = 500 * time.Millisecond })
			player, done := h.play(ctx, "cam1")
			for i, a := range tt.attempts {
				err := <-results
				if a.want == nil && err != nil {
					t.Fatalf("attempt %d: %v, want attached", i, err)
				}
				if a.want != nil && (!errors.Is(err, a.want) || !errors.Is(err, token.ErrInvalid)) {
					t.Fatalf("attempt %d: %v, want %v", i, err, a.want)
				}
			}
			player.Close()
			testutil.Wait(ctx, t, done, "HandlePlayer")
		})
	}

	t.Run("unknown session and after the end", func(t *testing.T) {
		var h *harness
		var last OpenRequest
		h = newHarness(t, func(ctx context.Context, c string, req OpenRequest) (OpenResult, error) {
			last = req
			return h.okModule(echo)(ctx, c, req)
		}, nil)
		upgrade := func() (net.Conn, error) { t.Error("upgrade called for a bad token"); return nil, errors.New("no") }
		if err := h.srv.AcceptModule("no-such-session", "tok-x", upgrade); !errors.Is(err, token.ErrUnknown) {
			t.Fatalf("unknown session: %v", err)
		}
		player, done := h.play(ctx, "cam1")
		go player.Write([]byte(options))
		buf := make([]byte, len(options))
		io.ReadFull(player, buf)
		player.Close()
		testutil.Wait(ctx, t, done, "HandlePlayer")
		if err := h.srv.AcceptModule(last.SessionID, last.Token, upgrade); !errors.Is(err, token.ErrUnknown) {
			t.Fatalf("token after the session ended: %v", err)
		}
	})
}

func TestExpiredToken(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	var h *harness
	got := make(chan error, 1)
	h = newHarness(t, func(ctx context.Context, _ string, req OpenRequest) (OpenResult, error) {
		time.Sleep(150 * time.Millisecond) // longer than the TTL
		got <- h.dialBack(req, req.Token, echo)
		return OpenResult{Status: 502}, nil
	}, func(s *Server) { s.TokenTTL = 50 * time.Millisecond })
	_, done := h.play(ctx, "cam1")
	select {
	case err := <-got:
		if !errors.Is(err, token.ErrExpired) {
			t.Fatalf("late module: %v, want ErrExpired", err)
		}
	case <-ctx.Done():
		t.Fatal("timed out waiting for the late module's dial-back")
	}
	testutil.Wait(ctx, t, done, "HandlePlayer")
}

func TestUpgradeFailure(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	var h *harness
	h = newHarness(t, func(ctx context.Context, _ string, req OpenRequest) (OpenResult, error) {
		err := h.srv.AcceptModule(req.SessionID, req.Token, func() (net.Conn, error) { return nil, errors.New("bad handshake") })
		if err == nil || errors.Is(err, token.ErrInvalid) {
			t.Errorf("AcceptModule: %v, want the upgrade error", err)
		}
		return OpenResult{Status: 400}, nil
	}, nil)
	_, done := h.play(ctx, "cam1")
	testutil.Wait(ctx, t, done, "HandlePlayer")
	if c := h.logs.Records("session closed"); len(c) != 1 || c[0]["outcome"] != metrics.OutcomeError {
		t.Fatalf("closed lines %v", c)
	}
}

func TestMaxSessionsPerCamera(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	release := make(chan struct{})
	h := newHarness(t, func(ctx context.Context, _ string, _ OpenRequest) (OpenResult, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return OpenResult{Status: 504}, nil
	}, func(s *Server) { s.MaxSessionsPerCamera = 1 })
	first, firstDone := h.play(ctx, "cam1")
	testutil.WaitFor(ctx, t, "the first session to register", func() bool { return h.srv.Active() == 1 })
	second, secondDone := h.play(ctx, "cam1")
	go second.Write([]byte(options))
	got, _ := readAll(ctx, second)
	testutil.Wait(ctx, t, secondDone, "the rejected session")
	if !strings.HasPrefix(string(got), "RTSP/1.0 503") {
		t.Fatalf("rejected player got %q", got)
	}
	// Other cameras are not limited by cam1's sessions.
	third, thirdDone := h.play(ctx, "cam2")
	testutil.WaitFor(ctx, t, "two sessions", func() bool { return h.srv.Active() == 2 })
	close(release)
	readAll(ctx, first)
	readAll(ctx, third)
	testutil.Wait(ctx, t, firstDone, "first session")
	testutil.Wait(ctx, t, thirdDone, "third session")
	if got := promtest.ToFloat64(h.srv.Metrics.SessionsTotal.WithLabelValues("cam1", metrics.OutcomeRejected)); got != 1 {
		t.Fatalf("rejected = %v", got)
	}
}

// goingAwayConn records how the session closed the module connection.
type goingAwayConn struct {
	net.Conn
	goingAway atomic.Bool
}

func (c *goingAwayConn) CloseGoingAway() error { c.goingAway.Store(true); return c.Conn.Close() }

func TestCloseEndsSessions(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	var h *harness
	spliced := &goingAwayConn{}
	h = newHarness(t, func(ctx context.Context, camera string, req OpenRequest) (OpenResult, error) {
		if camera == "waiting" {
			<-ctx.Done()
			return OpenResult{}, ctx.Err()
		}
		h.modules.Add(1)
		attached := make(chan struct{})
		go func() {
			defer h.modules.Done()
			h.srv.AcceptModule(req.SessionID, req.Token, func() (net.Conn, error) {
				a, b := net.Pipe()
				h.modules.Add(1)
				go func() { defer h.modules.Done(); echo(b); b.Close() }()
				spliced.Conn = a
				close(attached)
				return spliced, nil
			})
		}()
		<-attached
		return OpenResult{Status: 200}, nil
	}, nil)
	p1, done1 := h.play(ctx, "spliced")
	go p1.Write([]byte(options))
	buf := make([]byte, len(options))
	if _, err := io.ReadFull(p1, buf); err != nil {
		t.Fatal(err)
	}
	_, done2 := h.play(ctx, "waiting")
	testutil.WaitFor(ctx, t, "two sessions", func() bool { return h.srv.Active() == 2 })
	closed := make(chan struct{})
	go func() { h.srv.Close(); close(closed) }()
	testutil.Wait(ctx, t, closed, "Close")
	testutil.Wait(ctx, t, done1, "spliced session")
	testutil.Wait(ctx, t, done2, "waiting session")
	if !spliced.goingAway.Load() {
		t.Error("the spliced module conn was not closed as going away")
	}
	outcomes := map[string]string{}
	for _, c := range h.logs.Records("session closed") {
		outcomes[c["camera"].(string)] = c["outcome"].(string)
	}
	if outcomes["spliced"] != metrics.OutcomeOK || outcomes["waiting"] != metrics.OutcomeShutdown {
		t.Fatalf("outcomes %v", outcomes)
	}
	// After Close, new players are refused at once.
	p3, done3 := h.play(ctx, "late")
	testutil.Wait(ctx, t, done3, "late session")
	if _, err := p3.Read(make([]byte, 1)); err == nil {
		t.Fatal("late player not closed")
	}
}

// TestFrozenPlayerDoesNotStallOthers: one player stops reading while its
// camera keeps sending; another session must still flow.
func TestFrozenPlayerDoesNotStallOthers(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	var h *harness
	flooding := make(chan struct{})
	var floodOnce sync.Once
	h = newHarness(t, func(ctx context.Context, camera string, req OpenRequest) (OpenResult, error) {
		cam := echo
		if camera == "frozen" {
			cam = func(c net.Conn) {
				floodOnce.Do(func() { close(flooding) })
				b := make([]byte, 32<<10)
				for {
					if _, err := c.Write(b); err != nil {
						return
					}
				}
			}
		}
		return h.okModule(cam)(ctx, camera, req)
	}, nil)
	frozen, frozenDone := h.play(ctx, "frozen")
	testutil.Wait(ctx, t, flooding, "the flood")
	// The frozen player reads nothing.
	live, liveDone := h.play(ctx, "live")
	for i := range 20 {
		m := fmt.Sprintf("message %d", i)
		go live.Write([]byte(m))
		got := make([]byte, len(m))
		// A stalled session blocks for ever; the test's deadline tells it
		// from a slow machine, which a 2 s bound did not.
		deadline, _ := ctx.Deadline()
		live.SetReadDeadline(deadline)
		if _, err := io.ReadFull(live, got); err != nil || string(got) != m {
			t.Fatalf("live session stalled: %q, %v", got, err)
		}
	}
	live.Close()
	frozen.Close()
	testutil.Wait(ctx, t, liveDone, "live session")
	testutil.Wait(ctx, t, frozenDone, "frozen session")
}

func TestServiceUnavailable(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{options, "RTSP/1.0 503 Service Unavailable\r\nCSeq: 1\r\nServer: rtsptunnel-relay\r\nContent-Length: 0\r\n\r\n"},
		{"DESCRIBE rtsp://h/s RTSP/1.0\ncseq: 7\n\n", "RTSP/1.0 503 Service Unavailable\r\nCSeq: 7\r\nServer: rtsptunnel-relay\r\nContent-Length: 0\r\n\r\n"},
		{"OPTIONS * RTSP/1.0\r\n\r\n", "RTSP/1.0 503 Service Unavailable\r\nServer: rtsptunnel-relay\r\nContent-Length: 0\r\n\r\n"},
		{"OPTIONS rtsp://h/s RTSP/1.0\r\nCSeq: 1\r\n", ""}, // incomplete
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ""},
		{"\x24\x00\x00\x02hi\r\n\r\n", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := string(serviceUnavailable([]byte(tt.in))); got != tt.want {
			t.Errorf("serviceUnavailable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestInitializeChecksFields(t *testing.T) {
	if err := (&Server{}).Initialize(); err == nil {
		t.Fatal("Initialize accepted an empty Server")
	}
}

// TestIdleTimeout: a passthrough session whose camera sends nothing ends
// after IdleTimeout; one that keeps sending does not.
func TestIdleTimeout(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	var h *harness
	h = newHarness(t, func(ctx context.Context, camera string, r OpenRequest) (OpenResult, error) {
		cam := func(c net.Conn) { io.Copy(io.Discard, c) } // silent camera
		if camera == "talking" {
			cam = func(c net.Conn) {
				for {
					if _, err := c.Write([]byte("x")); err != nil {
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
		return h.okModule(cam)(ctx, camera, r)
	}, func(s *Server) { s.IdleTimeout = 3 * time.Second })
	_, silentDone := h.play(ctx, "silent")
	talking, talkingDone := h.play(ctx, "talking")
	go io.Copy(io.Discard, talking)
	testutil.Wait(ctx, t, silentDone, "the silent session to end")
	// The silent session ending took at least the idle timeout; the talking
	// one, sending every 20 ms, must still be there (the order of outcomes,
	// not a time, decides). 3 s is far beyond any gap a loaded machine puts
	// between the talking camera's writes.
	select {
	case <-talkingDone:
		t.Fatal("the talking session ended too")
	default:
	}
	talking.Close()
	testutil.Wait(ctx, t, talkingDone, "the talking session")
	var reasons []string
	for _, c := range h.logs.Records("session closed") {
		reasons = append(reasons, fmt.Sprint(c["camera"], ": ", c["reason"]))
	}
	if !slices.Contains(reasons, "silent: nothing from the camera for 3s (idleTimeout)") {
		t.Fatalf("reasons %q", reasons)
	}
}
