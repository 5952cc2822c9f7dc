package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/config"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

var hubKey = []byte("0123456789abcdef0123456789abcdef")

const hubHost = "hub.test"

// camera is a TCP echo server standing in for an RTSP camera.
func camera(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); io.Copy(c, c) })
		}
	})
	return ln.Addr().String()
}

// moduleBehaviour says what the fake module does with one tunnelOpen call.
type moduleBehaviour struct {
	// hubStatus, when non-zero, makes the hub answer with this status and
	// hubBody instead of delivering the call.
	hubStatus int
	hubBody   string
	// silent answers 200 without dialing the relay.
	silent bool
	// tokens returns the tokens to dial with, in order; nil means the
	// token from the payload once.
	tokens func(real string) []string
}

// dialResult is one websocket dial of the fake module.
type dialResult struct {
	status int // HTTP status of the upgrade (101 on success)
}

// fakeHub is an IoT Hub stand-in whose tunnelOpen behaves like the
// rtsptunnel module: it dials the relay's wss URL with the token and splices
// it to the camera.
type fakeHub struct {
	t          testing.TB
	srv        *httptest.Server
	caFile     string
	cameraAddr string
	relayCA    func() *x509.CertPool // trusts the relay's self-signed certificate
	behaviour  moduleBehaviour
	ctx        context.Context // bounds the module's tunnels

	mu     sync.Mutex
	tokens []string     // every token seen, to check the logs
	dials  []dialResult // every websocket dial
	sasErr []string     // signature problems
	wg     sync.WaitGroup
}

func newFakeHub(t testing.TB, ctx context.Context, cameraAddr string, b moduleBehaviour, relayCAFile string) *fakeHub {
	h := &fakeHub{t: t, cameraAddr: cameraAddr, ctx: ctx, behaviour: b}
	h.relayCA = func() *x509.CertPool {
		pool := x509.NewCertPool()
		pem, _ := os.ReadFile(relayCAFile)
		pool.AppendCertsFromPEM(pem)
		return pool
	}
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(h.serve))
	h.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	h.srv.StartTLS()
	h.caFile = filepath.Join(t.TempDir(), "hub-ca.pem")
	if err := os.WriteFile(h.caFile, testutil.CertPEM(h.srv.Certificate().Raw), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.srv.Close(); h.wg.Wait() })
	return h
}

// checkSAS verifies the service SAS like IoT Hub does.
func (h *fakeHub) checkSAS(auth string) error {
	v, ok := strings.CutPrefix(auth, "SharedAccessSignature ")
	if !ok {
		return fmt.Errorf("not a SAS: %q", auth)
	}
	q, err := url.ParseQuery(v)
	if err != nil {
		return err
	}
	if q.Get("sr") != hubHost || q.Get("skn") != "service" {
		return fmt.Errorf("sr %q skn %q", q.Get("sr"), q.Get("skn"))
	}
	se, _ := strconv.ParseInt(q.Get("se"), 10, 64)
	if time.Unix(se, 0).Before(time.Now()) {
		return fmt.Errorf("expired")
	}
	mac := hmac.New(sha256.New, hubKey)
	fmt.Fprintf(mac, "%s\n%s", url.QueryEscape(q.Get("sr")), q.Get("se"))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); q.Get("sig") != want {
		return fmt.Errorf("bad signature")
	}
	return nil
}

func (h *fakeHub) serve(w http.ResponseWriter, r *http.Request) {
	if err := h.checkSAS(r.Header.Get("Authorization")); err != nil {
		h.mu.Lock()
		h.sasErr = append(h.sasErr, err.Error())
		h.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.URL.Path != "/twins/edge1/modules/rtsptunnel/methods" || r.URL.Query().Get("api-version") != "2021-04-12" {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"errorCode":404010,"message":"no such module %s"}`, r.URL.Path)
		return
	}
	var req struct {
		MethodName string `json:"methodName"`
		Payload    struct {
			RemoteEndpoint           string `json:"remoteEndpoint"`
			RemoteAuthorizationToken string `json:"remoteAuthorizationToken"`
			LocalPort                int    `json:"localPort"`
		} `json:"payload"`
		ResponseTimeoutInSeconds int `json:"responseTimeoutInSeconds"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.MethodName != "tunnelOpen" || req.Payload.LocalPort != 554 || req.ResponseTimeoutInSeconds != 15 {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"errorCode":400004,"message":"bad request %v %+v"}`, err, req)
		return
	}
	p := req.Payload
	h.mu.Lock()
	h.tokens = append(h.tokens, p.RemoteAuthorizationToken)
	b := h.behaviour
	h.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	if b.hubStatus != 0 {
		w.WriteHeader(b.hubStatus)
		io.WriteString(w, b.hubBody)
		return
	}
	if b.silent {
		fmt.Fprint(w, `{"status":200,"payload":{"sessionId":"silent","target":"x"}}`)
		return
	}
	toks := []string{p.RemoteAuthorizationToken}
	if b.tokens != nil {
		toks = b.tokens(p.RemoteAuthorizationToken)
	}
	status, up := 0, false
	for _, tok := range toks {
		s, ok := h.dialRelay(p.RemoteEndpoint, tok)
		if !up { // the answer reflects the first successful dial, else the last
			status = s
		}
		up = up || ok
	}
	target := strings.SplitN(p.RemoteEndpoint, "?", 2)[0]
	if !up {
		fmt.Fprintf(w, `{"status":%d,"payload":{"code":"%d","target":%q,"message":"websocket failed"}}`, status, status, target)
		return
	}
	fmt.Fprintf(w, `{"status":200,"payload":{"sessionId":"m-1","target":%q}}`, h.cameraAddr)
}

// dialRelay opens the module's websocket and, on success, splices it to
// the camera in the background.
func (h *fakeHub) dialRelay(endpoint, tok string) (int, bool) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.relayCA()}}
	defer tr.CloseIdleConnections()
	// Bounded by the test's deadline only: a TLS handshake on a loaded
	// machine may take seconds, and a hung dial fails the test anyway.
	ws, resp, err := websocket.Dial(h.ctx, endpoint, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: tr},
		HTTPHeader: http.Header{
			"Authorization":          {"Bearer " + tok},
			"TunnelConnectionSource": {"PnpDevice"},
			"User-Agent":             {"fake-rtsptunnel/0 (linux; amd64)"},
		},
	})
	status := 502
	if resp != nil {
		status = resp.StatusCode
	}
	h.mu.Lock()
	h.dials = append(h.dials, dialResult{status})
	h.mu.Unlock()
	if err != nil {
		return status, false
	}
	cam, err := net.Dial("tcp", h.cameraAddr)
	if err != nil {
		ws.Close(websocket.StatusInternalError, "camera unreachable")
		return 400, false
	}
	nc := websocket.NetConn(h.ctx, ws, websocket.MessageBinary)
	h.wg.Go(func() { io.Copy(nc, cam); nc.Close() })
	h.wg.Go(func() { io.Copy(cam, nc); cam.Close() })
	return status, true
}

type relay struct {
	app  *App
	logs *testutil.LogBuffer
	reg  *prometheus.Registry
	hub  *fakeHub
}

func startRelay(t testing.TB, ctx context.Context, b moduleBehaviour) *relay {
	t.Helper()
	relayCA := filepath.Join(t.TempDir(), "relay-ca.pem")
	hub := newFakeHub(t, ctx, camera(t), b, relayCA)
	cfg := config.Default()
	cfg.WebsocketListen = "127.0.0.1:0"
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.SelfSigned = true
	cfg.SelfSignedCertFile = relayCA
	cfg.SessionWaitTimeout = config.Duration(700 * time.Millisecond)
	cfg.IoTHub.ConnectionString = "HostName=" + hubHost + ";SharedAccessKeyName=service;SharedAccessKey=" + base64.StdEncoding.EncodeToString(hubKey)
	cfg.IoTHub.ServiceURL = hub.srv.URL
	cfg.IoTHub.CAFile = hub.caFile
	// A passthrough camera open to anyone: these tests exercise tunnels and
	// the splice; players and shared upstreams are tested in rtspserver and
	// end to end.
	cfg.AllowAnonymous = true
	cfg.RTSPListen = "127.0.0.1:0"
	cfg.Cameras = []config.Camera{{Name: "cam1", DeviceID: "edge1", ModuleID: "rtsptunnel", LocalPort: 554, RTSPPath: "stream1", Mode: config.ModePassthrough, Listen: "127.0.0.1:0"}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := &relay{logs: &testutil.LogBuffer{}, reg: prometheus.NewRegistry(), hub: hub}
	r.app = &App{Config: cfg, Logger: r.logs.Logger(slog.LevelDebug), Registry: r.reg}
	if err := r.app.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.app.Close()
		logs := r.logs.String()
		hub.mu.Lock()
		defer hub.mu.Unlock()
		for _, tok := range hub.tokens {
			if strings.Contains(logs, tok) {
				t.Errorf("the logs contain a session token")
			}
		}
		if len(hub.sasErr) > 0 {
			t.Errorf("the hub refused the relay's SAS: %v", hub.sasErr)
		}
	})
	return r
}

func (r *relay) dialPlayer(t testing.TB) net.Conn {
	t.Helper()
	u, err := url.Parse(r.app.Ready().Cameras[0].RTSPURL)
	if err != nil || u.Path != "/stream1" {
		t.Fatalf("rtspURL %q", r.app.Ready().Cameras[0].RTSPURL)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testTimeout is every test's deadline.
const testTimeout = 20 * time.Second

// playerDeadline gives the player's connection the test's deadline: a
// broken tunnel blocks for ever, a loaded machine only for a while.
func playerDeadline(ctx context.Context, c net.Conn) {
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
}

const options = "OPTIONS rtsp://127.0.0.1/stream1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"

func TestTunnelBytesFlow(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	r := startRelay(t, ctx, moduleBehaviour{})
	player := r.dialPlayer(t)
	playerDeadline(ctx, player)

	payload := options + strings.Repeat("0123456789", 50000)
	errc := make(chan error, 1)
	go func() { _, err := io.WriteString(player, payload); errc <- err }()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(player, got); err != nil {
		t.Fatalf("reading echo: %v", err)
	}
	if string(got) != payload {
		t.Fatal("echo differs from what the player sent")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	player.Close()
	testutil.WaitFor(ctx, t, "the session to close", func() bool { return len(r.logs.Records("session closed")) == 1 })

	c := r.logs.Records("session closed")[0]
	if c["outcome"] != "ok" || c["bytes_to_camera"] != float64(len(payload)) || c["method_status"] != 200.0 {
		t.Fatalf("session closed %v", c)
	}
	if v := promtest.ToFloat64(mustCounter(t, r.reg, "relay_method_calls_total", "status", "200")); v != 1 {
		t.Fatalf("relay_method_calls_total{status=200} = %v", v)
	}
	// The metrics endpoint serves the relay's series; /healthz answers.
	body := httpGet(t, r.app.Ready().MetricsURL)
	for _, want := range []string{
		`relay_sessions_total{camera="cam1",outcome="ok"} 1`,
		`relay_edge_bytes_total{camera="cam1",direction="to_camera"} ` + strconv.Itoa(len(payload)),
		`relay_open_duration_seconds_count 1`,
		`relay_sessions_active 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if got := httpGet(t, strings.TrimSuffix(r.app.Ready().MetricsURL, "/metrics")+"/healthz"); strings.TrimSpace(got) != "ok" {
		t.Errorf("/healthz = %q", got)
	}
}

func TestTunnelFailures(t *testing.T) {
	tests := []struct {
		name        string
		behaviour   moduleBehaviour
		outcome     string
		methodLabel string // relay_method_calls_total status label
		logStatus   float64
		logText     string
		dials       []int // the fake module's upgrade statuses
		// bounded: the player's 503 comes within sessionWaitTimeout
		// (700 ms here); see tunnelFailuresBound.
		bounded bool
	}{
		{
			name:        "bad token",
			behaviour:   moduleBehaviour{tokens: func(string) []string { return []string{"not-the-token"} }},
			outcome:     "method_failed",
			methodLabel: "401", logStatus: 401, logText: "websocket failed",
			dials: []int{401},
		},
		{
			name:        "missing token",
			behaviour:   moduleBehaviour{tokens: func(string) []string { return []string{""} }},
			outcome:     "method_failed",
			methodLabel: "401", logStatus: 401,
			dials: []int{401},
		},
		{
			name:        "device offline",
			behaviour:   moduleBehaviour{hubStatus: 404, hubBody: `{"Message":"{\"errorCode\":404103,\"message\":\"Timed out waiting for device to connect.\"}","ExceptionMessage":""}`},
			outcome:     "method_error",
			methodLabel: "hub_404", logStatus: 404, logText: "404103",
		},
		{
			name:        "hub timeout",
			behaviour:   moduleBehaviour{hubStatus: 504, hubBody: `{"errorCode":504101,"message":"Timed out waiting for the response from device."}`},
			outcome:     "method_error",
			methodLabel: "hub_504", logStatus: 504, logText: "504101",
		},
		{
			name:        "module never connects",
			behaviour:   moduleBehaviour{silent: true},
			outcome:     "timeout",
			methodLabel: "200", logStatus: 200,
			bounded: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A relay that ignored the configured 700 ms would answer at
			// the 20 s default, twice the bound; the player waits up to a
			// minute, so the bound, not its deadline, tells. The 700 ms
			// path is 14 times shorter than the bound, which no load
			// reaches.
			const tunnelFailuresBound = 10 * time.Second
			ctx := testutil.Context(t, time.Minute)
			r := startRelay(t, ctx, tt.behaviour)
			start := time.Now()
			player := r.dialPlayer(t)
			playerDeadline(ctx, player)
			io.WriteString(player, options)
			got, err := io.ReadAll(player)
			if err != nil {
				t.Fatalf("player: %v", err)
			}
			if !strings.HasPrefix(string(got), "RTSP/1.0 503 Service Unavailable\r\nCSeq: 1\r\n") {
				t.Fatalf("player got %q, want a 503 and EOF", got)
			}
			if tt.bounded && time.Since(start) > tunnelFailuresBound {
				t.Fatalf("503 after %v, want about sessionWaitTimeout (700 ms), at most %v", time.Since(start), tunnelFailuresBound)
			}
			testutil.WaitFor(ctx, t, "the session to close", func() bool { return len(r.logs.Records("session closed")) == 1 })
			c := r.logs.Records("session closed")[0]
			line, _ := json.Marshal(c)
			if c["outcome"] != tt.outcome || c["method_status"] != tt.logStatus || !strings.Contains(string(line), tt.logText) {
				t.Fatalf("session closed line %s; want outcome %s, method_status %v, text %q", line, tt.outcome, tt.logStatus, tt.logText)
			}
			// 404103 is called again for notOnlineRetry (capped at 3/4 of
			// the 700 ms session wait here); every other answer is final.
			calls := promtest.ToFloat64(mustCounter(t, r.reg, "relay_method_calls_total", "status", tt.methodLabel))
			retries := promtest.ToFloat64(mustCounter(t, r.reg, "relay_method_retries_total", "", ""))
			if tt.methodLabel == "hub_404" {
				if calls < 2 || retries != calls-1 {
					t.Fatalf("relay_method_calls_total{status=%q} = %v, relay_method_retries_total = %v; want retries, one fewer than calls", tt.methodLabel, calls, retries)
				}
			} else if calls != 1 || retries != 0 {
				t.Fatalf("relay_method_calls_total{status=%q} = %v, relay_method_retries_total = %v; want 1 call, no retry", tt.methodLabel, calls, retries)
			}
			r.hub.mu.Lock()
			dials := r.hub.dials
			r.hub.mu.Unlock()
			if len(dials) != len(tt.dials) {
				t.Fatalf("module dials %v, want statuses %v", dials, tt.dials)
			}
			for i, d := range dials {
				if d.status != tt.dials[i] {
					t.Fatalf("dial %d got %d, want %d", i, d.status, tt.dials[i])
				}
			}
		})
	}
}

func TestReusedToken(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	r := startRelay(t, ctx, moduleBehaviour{tokens: func(real string) []string { return []string{real, real} }})
	player := r.dialPlayer(t)
	playerDeadline(ctx, player)
	io.WriteString(player, options)
	got := make([]byte, len(options))
	if _, err := io.ReadFull(player, got); err != nil || string(got) != options {
		t.Fatalf("tunnel did not work: %q %v", got, err)
	}
	var dials []dialResult
	testutil.WaitFor(ctx, t, "the second dial", func() bool {
		r.hub.mu.Lock()
		defer r.hub.mu.Unlock()
		dials = r.hub.dials
		return len(dials) == 2
	})
	if dials[0].status != 101 || dials[1].status != 401 {
		t.Fatalf("dials %v, want 101 then 401", dials)
	}
	if len(r.logs.Records("module connection refused")) != 1 {
		t.Fatalf("refusal not logged once:\n%s", r.logs)
	}
}

func TestShutdownClosesTunnels(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	r := startRelay(t, ctx, moduleBehaviour{})
	player := r.dialPlayer(t)
	playerDeadline(ctx, player)
	io.WriteString(player, options)
	io.ReadFull(player, make([]byte, len(options)))
	done := make(chan struct{})
	go func() { r.app.Close(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Close hung")
	}
	if _, err := player.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("player read after Close: %v, want EOF", err)
	}
	if _, err := net.Dial("tcp", r.app.Ready().Cameras[0].Listen); err == nil {
		t.Fatal("RTSP listener still open after Close")
	}
}

func mustCounter(t testing.TB, reg *prometheus.Registry, name, label, value string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" && len(m.GetLabel()) == 0 {
				return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return m.GetCounter().GetValue() })
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return nil
}

func httpGet(t testing.TB, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	return string(b)
}

func TestRun(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	t.Run("help", func(t *testing.T) {
		var out, errOut bytes.Buffer
		if code := Run(ctx, []string{"--help"}, func(string) string { return "" }, &out, &errOut); code != ExitOK {
			t.Fatalf("--help exit %d", code)
		}
		if !strings.Contains(out.String(), "Usage: relay") {
			t.Fatalf("--help printed %q", out.String())
		}
	})
	t.Run("bad config", func(t *testing.T) {
		var out, errOut bytes.Buffer
		code := Run(ctx, []string{"--insecure-ws", "--allow-anonymous", "--camera", "name=a,deviceId=d,localPort=0,mode=passthrough,listen=127.0.0.1:0"}, func(string) string { return "" }, &out, &errOut)
		if code != ExitUsage || !strings.Contains(errOut.String(), "cameras[0].localPort: must be 1..65535") || out.Len() != 0 {
			t.Fatalf("exit %d, stderr %q, stdout %q", code, errOut.String(), out.String())
		}
	})
	t.Run("start failure", func(t *testing.T) {
		busy := testutil.Listen(t)
		var out, errOut bytes.Buffer
		env := map[string]string{"IOTHUB_SERVICE_CONNECTION_STRING": "HostName=h;SharedAccessKeyName=s;SharedAccessKey=a2V5"}
		code := Run(ctx, []string{"--insecure-ws", "--allow-anonymous", "--ws-listen", "127.0.0.1:0", "--metrics-listen", "", "--rtsp-listen", "127.0.0.1:0",
			"--camera", "name=a,deviceId=d,localPort=554,mode=passthrough,listen=" + busy.Addr().String()}, func(k string) string { return env[k] }, &out, &errOut)
		if code != ExitFailed || !strings.Contains(errOut.String(), "camera a") {
			t.Fatalf("exit %d, stderr %q", code, errOut.String())
		}
	})
	t.Run("ready line and shutdown", func(t *testing.T) {
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		pr, pw := io.Pipe()
		var errOut testutil.LogBuffer
		env := map[string]string{
			"IOTHUB_SERVICE_CONNECTION_STRING": "HostName=h.example;SharedAccessKeyName=s;SharedAccessKey=a2V5",
			"IOTHUB_SERVICE_URL":               "https://127.0.0.1:1",
		}
		codec := make(chan int, 1)
		go func() {
			codec <- Run(runCtx, []string{"--self-signed", "--allow-anonymous", "--ws-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
				"--rtsp-listen", "127.0.0.1:0", "--rtsps-listen", "127.0.0.1:0",
				"--camera", "name=door,deviceId=edge1,moduleId=rtsptunnel,localPort=554,rtspPath=stream1",
				"--camera", "name=yard,deviceId=pi,localPort=554,mode=passthrough,listen=127.0.0.1:0"}, func(k string) string { return env[k] }, pw, &errOut)
			pw.Close()
		}()
		line, err := bufio.NewReader(pr).ReadString('\n')
		if err != nil {
			t.Fatalf("no ready line: %v; stderr:\n%s", err, errOut.String())
		}
		var ready Ready
		if err := json.Unmarshal([]byte(line), &ready); err != nil {
			t.Fatalf("ready line %q: %v", line, err)
		}
		if !ready.Ready || !strings.HasPrefix(ready.WebsocketURL, "wss://127.0.0.1:") || ready.CAFile == "" ||
			!strings.HasPrefix(ready.MetricsURL, "http://127.0.0.1:") || len(ready.Cameras) != 2 ||
			ready.Cameras[0].Name != "door" || ready.Cameras[0].RTSPURL != "rtsp://"+ready.RTSPListen+"/door" ||
			ready.Cameras[0].RTSPSURL != "rtsps://"+ready.RTSPSListen+"/door" || ready.Cameras[0].Mode != "shared" ||
			ready.Cameras[1].Mode != "passthrough" || !strings.HasPrefix(ready.Cameras[1].RTSPURL, "rtsp://127.0.0.1:") ||
			!strings.HasSuffix(ready.Cameras[1].RTSPURL, "/") {
			t.Fatalf("ready line %s", line)
		}
		// The CA file verifies the websocket endpoint's certificate.
		pool := testutil.PoolFromFile(t, ready.CAFile)
		u, _ := url.Parse(ready.WebsocketURL)
		conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool, ServerName: u.Hostname()})
		if err != nil {
			t.Fatalf("TLS with the ready line's CA: %v", err)
		}
		conn.Close()
		cancel()
		select {
		case code := <-codec:
			if code != ExitOK {
				t.Fatalf("exit %d after cancel", code)
			}
		case <-ctx.Done():
			t.Fatal("Run did not return after cancel")
		}
		if _, err := os.Stat(ready.CAFile); !os.IsNotExist(err) {
			t.Errorf("temporary CA file %s left behind", ready.CAFile)
		}
		if !strings.Contains(errOut.String(), "relay stopped") {
			t.Errorf("no stop log:\n%s", errOut.String())
		}
	})
}

// BenchmarkTunnel measures the relay's data path: player TCP → relay →
// websocket (TLS) → fake module → echo camera and back. Each op sends
// 64 KiB and reads it back; SetBytes counts one direction.
func BenchmarkTunnel(b *testing.B) {
	ctx := testutil.Context(b, testTimeout)
	r := startRelay(b, ctx, moduleBehaviour{})
	player := r.dialPlayer(b)
	chunk := make([]byte, 64<<10)
	back := make([]byte, len(chunk))
	// Open the tunnel before timing.
	io.WriteString(player, options)
	io.ReadFull(player, make([]byte, len(options)))
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	go func() {
		for range b.N {
			if _, err := player.Write(chunk); err != nil {
				return
			}
		}
	}()
	for range b.N {
		if _, err := io.ReadFull(player, back); err != nil {
			b.Fatal(err)
		}
	}
}
