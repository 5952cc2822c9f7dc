package tests

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

const token = "test-token-0123456789abcdef"

// TestTunnelVideo opens a tunnel through the real module and reads 5 s of
// video through it with ffprobe, then checks what an operator sees: the
// websocket request's headers, reported state and metrics.
func TestTunnelVideo(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{})

	if got := c.emu.ModelID(edgeDevice, moduleID); got != "dtmi:azure:videoanalyzer:WebSocketTunneling;1" {
		t.Errorf("model id announced = %q", got)
	}

	s, id := c.openTunnel(ctx, token)
	h := s.Header()
	if got := h.Get("TunnelConnectionSource"); got != "PnpDevice" {
		t.Errorf("TunnelConnectionSource = %q, want PnpDevice", got)
	}
	if got := h.Get("Authorization"); got != "Bearer "+token {
		t.Errorf("Authorization header = %q", got)
	}
	if ua := h.Get("User-Agent"); !strings.Contains(ua, "rtsptunnel/") {
		t.Errorf("User-Agent = %q, want the module name and version", ua)
	}

	p, err := harness.FFProbe(ctx, rtspURL(s), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// 25 fps for 5 s is 125 packets; leave room for a slow start under -race.
	if p.Packets < 100 || p.Keyframes < 4 {
		t.Fatalf("ffprobe read %d packets (%d keyframes) through the tunnel, want >= 100 (>= 4)", p.Packets, p.Keyframes)
	}
	t.Logf("through the tunnel: %d packets, %d keyframes, %d bytes in %s", p.Packets, p.Keyframes, p.Bytes, p.Elapsed)

	// The player hung up: the tunnel ends normally and the state says so.
	select {
	case <-s.Closed():
	case <-ctx.Done():
		t.Fatal("the tunnel did not close after the player left")
	}
	if code, _ := s.CloseStatus(); code != websocket.StatusNormalClosure {
		t.Errorf("websocket close code = %d, want 1000", code)
	}

	c.waitReported(ctx, "the session and the summary", func(rep map[string]any) bool {
		sum, _ := rep["summary"].(map[string]any)
		opened, _ := sum["opened"].(float64)
		return opened >= 1 && strings.Contains(mustJSON(rep), id)
	})
	if strings.Contains(mustJSON(c.reported()), token) {
		t.Error("the token appears in the reported properties")
	}

	m := c.scrape(ctx)
	if v := metricValue(m, "rtsptunnel_sessions_opened_total"); v != 1 {
		t.Errorf("rtsptunnel_sessions_opened_total = %v, want 1", v)
	}
	if v := metricValue(m, `rtsptunnel_bytes_total{direction="to_remote"`); v < float64(p.Bytes) {
		t.Errorf("bytes to remote = %v, want >= the %d bytes of video ffprobe read", v, p.Bytes)
	}
	if strings.Contains(m, token) || strings.Contains(c.module.Output(), token) {
		t.Error("the token appears in metrics or logs")
	}
}

// TestTunnelOpenRefusals drives every refusal of tunnelOpen through IoT Hub
// and checks the exact status and AVA error body, in the documented order.
func TestTunnelOpenRefusals(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{noStart: true})
	down := freeAddr(t) // nothing listens there: port 555's camera is down
	c.startModule(ctx, `RTSPTUNNEL_TARGETS={"554":"`+c.cam.ListenAddr()+`","555":"`+down+`"}`)

	refused, err := c.cloud.NewSession(token)
	if err != nil {
		t.Fatal(err)
	}
	refused.Refuse(403)
	ok, err := c.cloud.NewSession(token)
	if err != nil {
		t.Fatal(err)
	}

	type body struct{ Code, Target, Message string }
	cases := []struct {
		name     string
		payload  string
		status   int
		target   string // "" = any non-empty
		message  string // substring; "" = any non-empty
		wsCalled bool
	}{
		{"empty object", `{}`, 400, "", "", false},
		{"not an object", `[1,2]`, 400, "", "", false},
		{"null", `null`, 400, "", "", false},
		{"ws scheme", `{"remoteEndpoint":"ws://127.0.0.1:1/x","remoteAuthorizationToken":"t","localPort":554}`, 400, "", "", false},
		{"http scheme", `{"remoteEndpoint":"https://127.0.0.1:1/x","remoteAuthorizationToken":"t","localPort":554}`, 400, "", "", false},
		{"relative", `{"remoteEndpoint":"/tunnels/x","remoteAuthorizationToken":"t","localPort":554}`, 400, "", "", false},
		{"empty token", `{"remoteEndpoint":"` + ok.URL() + `","remoteAuthorizationToken":"","localPort":554}`, 400, "", "", false},
		{"port string", `{"remoteEndpoint":"` + ok.URL() + `","remoteAuthorizationToken":"t","localPort":"554"}`, 400, "", "", false},
		{"port zero", `{"remoteEndpoint":"` + ok.URL() + `","remoteAuthorizationToken":"t","localPort":0}`, 400, "", "", false},
		{"port too big", `{"remoteEndpoint":"` + ok.URL() + `","remoteAuthorizationToken":"t","localPort":65536}`, 400, "", "", false},
		{"port unmapped", `{"remoteEndpoint":"` + ok.URL() + `","remoteAuthorizationToken":"t","localPort":556}`, 400, "", "Local port is not available", false},
		{"camera down", `{"remoteEndpoint":"` + ok.URL() + `","remoteAuthorizationToken":"t","localPort":555}`, 400, down, "Could not connect to RTSP endpoint", false},
		{"websocket 401", `{"remoteEndpoint":"` + ok.URL() + `","remoteAuthorizationToken":"wrong","localPort":554}`, 401, ok.URL(), "", true},
		{"websocket 403", `{"remoteEndpoint":"` + refused.URL() + `?sig=secret","remoteAuthorizationToken":"` + token + `","localPort":554}`, 403, refused.URL(), "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, raw := c.invoke(ctx, "tunnelOpen", json.RawMessage(tc.payload))
			if status != tc.status {
				t.Fatalf("status = %d (%s), want %d", status, raw, tc.status)
			}
			var b body
			if err := json.Unmarshal(raw, &b); err != nil {
				t.Fatalf("body %s is not the AVA error shape: %v", raw, err)
			}
			if b.Code != itoa(tc.status) || b.Message == "" || b.Target == "" {
				t.Errorf("body = %s, want code %d and a target and message", raw, tc.status)
			}
			if tc.target != "" && b.Target != tc.target {
				t.Errorf("target = %q, want %q", b.Target, tc.target)
			}
			if tc.message != "" && !strings.Contains(b.Message, tc.message) {
				t.Errorf("message = %q, want %q", b.Message, tc.message)
			}
			if strings.Contains(string(raw), "secret") {
				t.Errorf("the endpoint's query string leaked into the answer: %s", raw)
			}
		})
	}
	if n := refused.Attempts(); n != 1 {
		t.Errorf("the refusing endpoint saw %d attempts, want exactly 1 (no retries)", n)
	}
	// After all those refusals, a good open still works.
	s, _ := c.openTunnel(ctx, token)
	mustPlay(t, ctx, rtspURL(s), "after refusals")
}

// TestSessionLimit fills the session limit: the next open gets 429 with the
// AVA body while the open tunnel keeps streaming.
func TestSessionLimit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{env: []string{"RTSPTUNNEL_MAXSESSIONS=1"}})

	s, _ := c.openTunnel(ctx, token)
	player := harness.StartFFProbe(ctx, rtspURL(s), 4*time.Second)
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	s2, err := c.cloud.NewSession(token)
	if err != nil {
		t.Fatal(err)
	}
	status, raw := c.invoke(ctx, "tunnelOpen", openPayload{s2.URL(), token, 554})
	if status != 429 || !strings.Contains(string(raw), `"code":"429"`) {
		t.Errorf("over the limit: %d %s, want 429 with the AVA body", status, raw)
	}
	if s2.Attempts() != 0 {
		t.Errorf("a refused open connected to the cloud %d times", s2.Attempts())
	}
	if probe, probeErr := player.Wait(); probeErr != nil || probe.Packets < 75 {
		t.Fatalf("the open tunnel was disturbed: %d packets, %v", probe.Packets, probeErr)
	}
}

// TestDesiredSettings changes settings through desired properties: a valid
// change is acknowledged (ac 200) and applied live, an invalid one is refused
// (ac 400) and the previous value kept.
func TestDesiredSettings(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{})

	v, err := c.emu.PatchDesired(edgeDevice, moduleID, json.RawMessage(`{"allowedRemoteHosts":["cloud.example.com"],"maxSessions":-5}`))
	if err != nil {
		t.Fatal(err)
	}
	rep := c.waitReported(ctx, "acks for both properties", func(rep map[string]any) bool {
		a, _ := rep["allowedRemoteHosts"].(map[string]any)
		m, _ := rep["maxSessions"].(map[string]any)
		return a != nil && m != nil && a["av"] == float64(v) && m["av"] == float64(v)
	})
	if a := rep["allowedRemoteHosts"].(map[string]any); a["ac"] != float64(200) {
		t.Errorf("allowedRemoteHosts ack = %v, want ac 200", a)
	}
	if m := rep["maxSessions"].(map[string]any); m["ac"] != float64(400) || m["ad"] == "" {
		t.Errorf("maxSessions ack = %v, want ac 400 with a reason", m)
	}

	// Applied live: 127.0.0.1 is no longer an allowed remote host.
	s, err := c.cloud.NewSession(token)
	if err != nil {
		t.Fatal(err)
	}
	status, raw := c.invoke(ctx, "tunnelOpen", openPayload{s.URL(), token, 554})
	if status != 400 || s.Attempts() != 0 {
		t.Fatalf("open to a host outside allowedRemoteHosts: %d %s (%d connects), want 400 and none", status, raw, s.Attempts())
	}

	// Back to the loopback cloud, named exactly (an empty list would allow
	// any host but loopback): the open works again.
	if _, err := c.emu.PatchDesired(edgeDevice, moduleID, json.RawMessage(`{"allowedRemoteHosts":["127.0.0.1"]}`)); err != nil {
		t.Fatal(err)
	}
	c.waitReported(ctx, "the second ack", func(rep map[string]any) bool {
		a, _ := rep["allowedRemoteHosts"].(map[string]any)
		return a != nil && a["ac"] == float64(200) && a["av"] == float64(v+1)
	})
	c.openTunnel(ctx, token)
}

// TestReconnectWhileStreaming restarts the emulator (IoT Hub/edgeHub) while a
// tunnel streams: the video keeps flowing, the module reconnects, methods
// answer again and reported state is published again.
func TestReconnectWhileStreaming(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{})

	s, _ := c.openTunnel(ctx, token)
	player := harness.StartFFProbe(ctx, rtspURL(s), 10*time.Second)
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // stream a while before the outage
	// The emulator keeps twins across restarts, so a summary being there
	// proves nothing: the module must have patched the twin again (a higher
	// reported $version). That it re-publishes the whole state, not only
	// what changed, is TestRepublishAfterReconnect's job.
	rep := c.waitReported(ctx, "one active session", func(rep map[string]any) bool {
		sum, _ := rep["summary"].(map[string]any)
		return sum["active"] == float64(1)
	})
	version := rep["$version"].(float64)
	connects := c.emu.Connects(edgeDevice, moduleID)
	c.restartEmulator(3 * time.Second)
	c.waitReady(ctx)
	if c.emu.Connects(edgeDevice, moduleID) < 1 || connects < 1 {
		t.Errorf("connects before %d, after restart %d", connects, c.emu.Connects(edgeDevice, moduleID))
	}
	c.waitReported(ctx, "the state re-published after the restart", func(rep map[string]any) bool {
		sum, _ := rep["summary"].(map[string]any)
		v, _ := rep["$version"].(float64)
		return v > version && sum["active"] == float64(1)
	})
	// 10 s at 25 fps is 250 packets; the outage must not cost any.
	if probe, probeErr := player.Wait(); probeErr != nil || probe.Packets < 225 {
		t.Fatalf("through the outage: %d packets, %v", probe.Packets, probeErr)
	}
	c.openTunnel(ctx, token)
}

// TestTokenRenewal runs the module with short SAS tokens that the emulator
// enforces: over several renewals, no method call is answered 404.
func TestTokenRenewal(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{
		env: []string{"RTSPTUNNEL_TOKENLIFETIME=4s"},
		emu: emulator.Options{MaxTokenLifetime: 4 * time.Second},
	})
	deadline := time.Now().Add(15 * time.Second)
	calls, failures := 0, 0
	var retries atomic.Int64 // 404103 while the module renews (it unsubscribed), retried as the relay does
	for time.Now().Before(deadline) {
		status, resp, err := c.invokeAsRelay(ctx, json.RawMessage(`{}`), &retries)
		calls++
		if err != nil || status != 400 {
			failures++
			t.Errorf("call %d during renewals: status %d %s, %v", calls, status, resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := c.emu.Connects(edgeDevice, moduleID); n < 3 {
		t.Errorf("the module connected %d times in 15 s with 4 s tokens, want renewals", n)
	}
	t.Logf("%d calls, %d failures, %d retries after a 404103, %d connects", calls, failures, retries.Load(), c.emu.Connects(edgeDevice, moduleID))
}

// TestShutdown sends SIGTERM with a tunnel open: the tunnel is closed with
// "going away", the final state is flushed and the module exits 0 with every
// shutdown step done in time (see stopModule).
func TestShutdown(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{})
	s, _ := c.openTunnel(ctx, token)
	player, err := net.Dial("tcp", s.ListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer player.Close()
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	c.waitReported(ctx, "one active session", func(rep map[string]any) bool {
		sum, _ := rep["summary"].(map[string]any)
		return sum["active"] == float64(1)
	})
	took := c.stopModule()
	t.Logf("exited %s after SIGTERM", took)
	<-s.Closed()
	if code, _ := s.CloseStatus(); code != websocket.StatusGoingAway {
		t.Errorf("websocket close code = %d, want 1001 going away", code)
	}
	rep := c.reported()
	if sum, _ := rep["summary"].(map[string]any); sum["active"] != float64(0) {
		t.Errorf("final reported summary = %v, want active 0", sum)
	}
}

// TestStartErrors runs the binary with broken configurations: each stops at
// once with one clear line, and --help/--version answer.
func TestStartErrors(t *testing.T) {
	t.Parallel()
	bin := build(t, harness.Module)
	cases := []struct {
		name string
		args []string
		env  []string
		code int
		want []string
	}{
		{"no identity", nil, nil, 2, []string{"IOTEDGE_WORKLOADURI", "IOTHUB_CONNECTION_STRING"}},
		{"half edge identity", nil, []string{"IOTEDGE_WORKLOADURI=unix:///nonexistent.sock", "IOTEDGE_DEVICEID=d"}, 2, []string{"IOTEDGE_MODULEID"}},
		{"bad setting", nil, []string{"RTSPTUNNEL_MAXSESSIONS=lots", "IOTHUB_CONNECTION_STRING=HostName=h;DeviceId=d;SharedAccessKey=a2V5"}, 2, []string{"maxSessions"}},
		{"help", []string{"--help"}, nil, 0, []string{"RTSPTUNNEL_TARGETS", "RTSPTUNNEL_MAXSESSIONS", "RTSPTUNNEL_IDLETIMEOUT"}},
		{"version", []string{"--version"}, nil, 0, []string{"rtsptunnel"}},
		{"unknown flag", []string{"--bogus"}, nil, 2, []string{"bogus"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			env := append([]string{"IOTEDGE_WORKLOADURI=", "IOTEDGE_DEVICEID=", "IOTEDGE_MODULEID=", "IOTEDGE_IOTHUBHOSTNAME=",
				"IOTEDGE_GATEWAYHOSTNAME=", "IOTEDGE_MODULEGENERATIONID=", "IOTEDGE_AUTHSCHEME=", "EdgeHubConnectionString=",
				"IOTHUB_CONNECTION_STRING=", "RTSPTUNNEL_METRICSADDR=127.0.0.1:0"}, tc.env...)
			p, err := harness.Start(ctx, "rtsptunnel", bin, tc.args, &harness.StartOptions{Env: env})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.Done():
			case <-ctx.Done():
				p.Stop(time.Second)
				t.Fatalf("did not exit; output:\n%s", p.Output())
			}
			if got := p.ExitCode(); got != tc.code {
				t.Errorf("exit code %d, want %d; output:\n%s", got, tc.code, p.Output())
			}
			out := p.Output()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not mention %q:\n%s", w, out)
				}
			}
		})
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
