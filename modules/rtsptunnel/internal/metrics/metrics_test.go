package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newTestMetrics(t *testing.T, opts Options) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// exercise touches every metric so that every series exists.
func exercise(m *Metrics) {
	m.SessionOpened()
	m.SessionFailed("camera_unreachable")
	m.SessionClosed("camera_closed")
	m.ObserveOpenDuration(120 * time.Millisecond)
	toRemote, toCamera := m.ByteCounters()
	toRemote.Add(1000)
	toCamera.Add(10)
	m.MethodCall("tunnelOpen", 200)
	m.SetHubConnected(true)
}

func TestLint(t *testing.T) {
	m, _ := newTestMetrics(t, Options{IoTHub: "hub.azure-devices.net", EdgeDevice: "edge1", Module: "rtsptunnel"})
	exercise(m)
	problems, err := testutil.CollectAndLint(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestValues(t *testing.T) {
	m, reg := newTestMetrics(t, Options{IoTHub: "hub", Module: "rtsptunnel"})
	exercise(m)
	m.SessionOpened()
	m.SetHubConnected(false)
	m.SetHubConnected(true) // a reconnect
	m.SetHubConnected(true) // no change
	const want = `
# HELP rtsptunnel_bytes_total Bytes delivered through tunnels, by direction.
# TYPE rtsptunnel_bytes_total counter
rtsptunnel_bytes_total{direction="to_camera",iothub="hub",module_name="rtsptunnel"} 10
rtsptunnel_bytes_total{direction="to_remote",iothub="hub",module_name="rtsptunnel"} 1000
# HELP rtsptunnel_hub_connected 1 while the IoT Hub (edgeHub) connection is up.
# TYPE rtsptunnel_hub_connected gauge
rtsptunnel_hub_connected{iothub="hub",module_name="rtsptunnel"} 1
# HELP rtsptunnel_hub_reconnects_total IoT Hub (edgeHub) connections after the first.
# TYPE rtsptunnel_hub_reconnects_total counter
rtsptunnel_hub_reconnects_total{iothub="hub",module_name="rtsptunnel"} 1
# HELP rtsptunnel_method_calls_total Direct method calls answered, by method and status.
# TYPE rtsptunnel_method_calls_total counter
rtsptunnel_method_calls_total{iothub="hub",method="tunnelOpen",module_name="rtsptunnel",status="200"} 1
# HELP rtsptunnel_sessions_active Tunnels open now.
# TYPE rtsptunnel_sessions_active gauge
rtsptunnel_sessions_active{iothub="hub",module_name="rtsptunnel"} 1
# HELP rtsptunnel_sessions_closed_total Tunnels that ended, by reason.
# TYPE rtsptunnel_sessions_closed_total counter
rtsptunnel_sessions_closed_total{iothub="hub",module_name="rtsptunnel",reason="camera_closed"} 1
# HELP rtsptunnel_sessions_failed_total tunnelOpen calls that failed, by reason.
# TYPE rtsptunnel_sessions_failed_total counter
rtsptunnel_sessions_failed_total{iothub="hub",module_name="rtsptunnel",reason="camera_unreachable"} 1
# HELP rtsptunnel_sessions_opened_total Tunnels opened successfully.
# TYPE rtsptunnel_sessions_opened_total counter
rtsptunnel_sessions_opened_total{iothub="hub",module_name="rtsptunnel"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"rtsptunnel_bytes_total", "rtsptunnel_hub_connected", "rtsptunnel_hub_reconnects_total", "rtsptunnel_method_calls_total",
		"rtsptunnel_sessions_active", "rtsptunnel_sessions_closed_total", "rtsptunnel_sessions_failed_total", "rtsptunnel_sessions_opened_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m, "rtsptunnel_open_duration_seconds"); n != 1 {
		t.Errorf("open duration series = %d", n)
	}
	if _, err := New(reg, Options{}); err == nil {
		t.Error("registering twice on one registry should fail")
	}
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	exercise2 := func() {
		m.SessionOpened()
		m.SessionFailed("x")
		m.SessionClosed("x")
		m.ObserveOpenDuration(time.Second)
		m.MethodCall("m", 1)
		m.SetHubConnected(true)
		if a, b := m.ByteCounters(); a != nil || b != nil {
			t.Error("nil metrics returned counters")
		}
		if ok, _ := m.Healthy(time.Now()); !ok {
			t.Error("nil metrics unhealthy")
		}
	}
	exercise2()
}

func TestHealthy(t *testing.T) {
	m, _ := newTestMetrics(t, Options{HealthGrace: time.Minute})
	start := time.Now()
	for _, step := range []struct {
		name      string
		connected *bool
		at        time.Duration
		want      bool
	}{
		{name: "starting", at: 10 * time.Second, want: true},
		{name: "never connected", at: 2 * time.Minute, want: false},
		{name: "connected", connected: ptr(true), at: 0, want: true},
		{name: "connected later", at: time.Hour, want: true},
		{name: "just lost", connected: ptr(false), at: 30 * time.Second, want: true},
		{name: "lost for long", at: 2 * time.Minute, want: false},
	} {
		if step.connected != nil {
			m.SetHubConnected(*step.connected)
			start = time.Now()
		}
		if ok, reason := m.Healthy(start.Add(step.at)); ok != step.want {
			t.Errorf("%s: healthy = %v (%s), want %v", step.name, ok, reason, step.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestServer(t *testing.T) {
	m, reg := newTestMetrics(t, Options{HealthGrace: time.Nanosecond})
	exercise(m)
	s := &Server{Addr: "127.0.0.1:0", Gatherer: reg, Metrics: m}
	if err := s.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "http://" + s.ListenAddr().String()
	get := func(path string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // a local server; generous for a loaded machine
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "rtsptunnel_sessions_opened_total 1") {
		t.Errorf("/metrics = %d\n%s", code, body)
	}
	if code, body := get("/healthz"); code != 200 || !strings.HasPrefix(body, "ok") {
		t.Errorf("/healthz connected = %d %q", code, body)
	}
	m.SetHubConnected(false)
	time.Sleep(time.Millisecond)
	if code, body := get("/healthz"); code != 503 || !strings.HasPrefix(body, "unhealthy") {
		t.Errorf("/healthz disconnected = %d %q", code, body)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope = %d", code)
	}

	// A second server on the same address fails in Initialize, starting nothing.
	busy := &Server{Addr: s.ListenAddr().String(), Gatherer: reg}
	if err := busy.Initialize(); err == nil {
		busy.Close()
		t.Error("second server on a bound address started")
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if c, err := net.DialTimeout("tcp", s.ListenAddr().String(), time.Second); err == nil {
		c.Close()
		t.Error("server still listening after Close")
	}
	http.DefaultClient.CloseIdleConnections()
}
