package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// gatherAll returns every metric family the relay exports, each with at
// least one series (a camera's, a histogram observed once), so that tests
// can check names against documents.
func gatherAll(t *testing.T) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.InitCamera("cam", true)
	m.UpstreamOpen.WithLabelValues("cam").Observe(1)
	m.PlayerJoin.WithLabelValues("cam").Observe(1)
	m.OpenDuration.Observe(1)
	m.MethodCalls.WithLabelValues("200").Inc()
	m.WebRTC.FirstPacket.WithLabelValues("cam").Observe(1)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return families
}

func TestLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.InitCamera("cam1", true)
	m.SetUpstreamState("cam1", StateLive)
	m.UpstreamOpen.WithLabelValues("cam1").Observe(0.3)
	m.PlayerJoin.WithLabelValues("cam1").Observe(0.01)
	m.SessionsTotal.WithLabelValues("cam1", OutcomeOK).Inc()
	m.MethodCalls.WithLabelValues(MethodStatus(200, 200)).Inc()
	m.OpenDuration.Observe(0.2)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	if _, err := New(reg); err == nil {
		t.Fatal("registering twice succeeded")
	}
	want := `
# HELP relay_sessions_total Tunnel sessions (tunnelOpen calls) ended, by camera and outcome.
# TYPE relay_sessions_total counter
relay_sessions_total{camera="cam1",outcome="canceled"} 0
relay_sessions_total{camera="cam1",outcome="error"} 0
relay_sessions_total{camera="cam1",outcome="method_error"} 0
relay_sessions_total{camera="cam1",outcome="method_failed"} 0
relay_sessions_total{camera="cam1",outcome="ok"} 1
relay_sessions_total{camera="cam1",outcome="player_gone"} 0
relay_sessions_total{camera="cam1",outcome="rejected"} 0
relay_sessions_total{camera="cam1",outcome="shutdown"} 0
relay_sessions_total{camera="cam1",outcome="timeout"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "relay_sessions_total"); err != nil {
		t.Fatal(err)
	}
	want = `
# HELP relay_upstream_state 1 for the shared upstream's current state (idle, opening, live, reconnecting), by camera.
# TYPE relay_upstream_state gauge
relay_upstream_state{camera="cam1",state="idle"} 0
relay_upstream_state{camera="cam1",state="live"} 1
relay_upstream_state{camera="cam1",state="opening"} 0
relay_upstream_state{camera="cam1",state="reconnecting"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "relay_upstream_state"); err != nil {
		t.Fatal(err)
	}
}

func TestMethodStatus(t *testing.T) {
	tests := []struct {
		hub, module int
		want        string
	}{
		{200, 200, "200"},
		{200, 400, "400"},
		{200, 502, "502"},
		{200, 0, "other"},
		{200, 1234, "other"},
		{404, 0, "hub_404"},
		{504, 0, "hub_504"},
		{0, 0, "error"},
		{999, 0, "hub_other"},
	}
	for _, tt := range tests {
		if got := MethodStatus(tt.hub, tt.module); got != tt.want {
			t.Errorf("MethodStatus(%d, %d) = %q, want %q", tt.hub, tt.module, got, tt.want)
		}
	}
}
