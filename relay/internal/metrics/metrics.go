package metrics

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Session outcomes, the values of relay_sessions_total's outcome label.
const (
	// OutcomeOK: the module's websocket came up and bytes were spliced until
	// one side closed.
	OutcomeOK = "ok"
	// OutcomeMethodError: IoT Hub did not deliver the method (device or
	// module offline, hub timeout, authorization, transport error).
	OutcomeMethodError = "method_error"
	// OutcomeMethodFailed: the module answered tunnelOpen with a non-200 status.
	OutcomeMethodFailed = "method_failed"
	// OutcomeTimeout: the module's websocket did not arrive in time.
	OutcomeTimeout = "timeout"
	// OutcomePlayerGone: the player hung up before the tunnel was up.
	OutcomePlayerGone = "player_gone"
	// OutcomeRejected: the camera already had its maximum number of sessions.
	OutcomeRejected = "rejected"
	// OutcomeShutdown: the relay stopped before the tunnel was up.
	OutcomeShutdown = "shutdown"
	// OutcomeError: an internal failure (randomness, websocket upgrade).
	OutcomeError = "error"
)

// Outcomes lists every outcome label value.
var Outcomes = []string{
	OutcomeOK, OutcomeMethodError, OutcomeMethodFailed, OutcomeTimeout,
	OutcomePlayerGone, OutcomeRejected, OutcomeShutdown, OutcomeError,
}

// Directions of relay_bytes_total.
const (
	DirToCamera = "to_camera" // player → module → camera
	DirToPlayer = "to_player" // camera → module → player
)

// Metrics holds the relay's collectors. Its methods are safe for concurrent use.
type Metrics struct {
	SessionsTotal  *prometheus.CounterVec
	SessionsActive prometheus.Gauge
	OpenDuration   prometheus.Histogram
	BytesTotal     *prometheus.CounterVec
	MethodCalls    *prometheus.CounterVec
}

// New creates the collectors and registers them with reg. It fails if any
// of them is already registered.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		SessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_sessions_total",
			Help: "Player sessions ended, by camera and outcome.",
		}, []string{"camera", "outcome"}),
		SessionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_sessions_active",
			Help: "Player sessions in progress, from player connect to close.",
		}),
		OpenDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_open_duration_seconds",
			Help:    "Time from a player's connect until the module's websocket is up.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30},
		}),
		BytesTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_bytes_total",
			Help: "Tunnel payload bytes spliced, by direction (to_camera, to_player).",
		}, []string{"direction"}),
		MethodCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_method_calls_total",
			Help: "tunnelOpen direct method calls, by status: the module's status when IoT Hub delivered the call, hub_<code> when IoT Hub refused it, error when no HTTP answer came.",
		}, []string{"status"}),
	}
	for _, c := range []prometheus.Collector{m.SessionsTotal, m.SessionsActive, m.OpenDuration, m.BytesTotal, m.MethodCalls} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("failed to register metrics: %w", err)
		}
	}
	for _, d := range []string{DirToCamera, DirToPlayer} {
		m.BytesTotal.WithLabelValues(d)
	}
	return m, nil
}

// InitCamera creates camera's relay_sessions_total series at zero, so that
// rates work from the first session on.
func (m *Metrics) InitCamera(camera string) {
	for _, o := range Outcomes {
		m.SessionsTotal.WithLabelValues(camera, o)
	}
}

// MethodStatus returns the status label of relay_method_calls_total:
// the module's status ("200", "400", ...) when IoT Hub answered 200,
// "hub_<code>" when IoT Hub answered hubStatus != 200, and "error" when
// there was no HTTP answer (hubStatus 0). Codes outside 100..599 become
// "other", keeping the label bounded.
func MethodStatus(hubStatus, moduleStatus int) string {
	code := func(c int) string {
		if c < 100 || c > 599 {
			return "other"
		}
		return strconv.Itoa(c)
	}
	switch {
	case hubStatus == 0:
		return "error"
	case hubStatus != 200:
		return "hub_" + code(hubStatus)
	default:
		return code(moduleStatus)
	}
}
