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
	// OutcomeCanceled: the relay no longer needed the tunnel before it was
	// up (the last viewer of a shared camera left).
	OutcomeCanceled = "canceled"
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
	OutcomePlayerGone, OutcomeCanceled, OutcomeRejected, OutcomeShutdown, OutcomeError,
}

// Directions of relay_edge_bytes_total.
const (
	DirToCamera   = "to_camera"   // relay → module → camera
	DirFromCamera = "from_camera" // camera → module → relay
)

// Upstream states, the values of relay_upstream_state's state label.
const (
	StateIdle         = "idle"         // nobody watches; no tunnel
	StateOpening      = "opening"      // first viewer arrived; tunnel and RTSP session starting
	StateLive         = "live"         // packets flow to viewers
	StateReconnecting = "reconnecting" // the tunnel or camera dropped; viewers wait
)

// States lists every upstream state.
var States = []string{StateIdle, StateOpening, StateLive, StateReconnecting}

// Refusal reasons, the values of relay_rtsp_refused_total's reason label.
const (
	RefusedBadCredentials = "bad_credentials" // wrong password, unknown user, replayed or malformed credentials (401)
	RefusedForbidden      = "forbidden"       // valid user not on the camera's allow list (403)
	RefusedNotFound       = "not_found"       // no such camera (404)
	RefusedRateLimited    = "rate_limited"    // too many failures from the source address (503)
	RefusedLimit          = "limit"           // maxPlayersPerCamera or maxPlayers reached (503)
	RefusedUnavailable    = "unavailable"     // the camera's upstream could not be opened (503)
)

// Refusals lists every refusal reason.
var Refusals = []string{RefusedBadCredentials, RefusedForbidden, RefusedNotFound, RefusedRateLimited, RefusedLimit, RefusedUnavailable}

// Metrics holds the relay's collectors. Its methods are safe for concurrent use.
type Metrics struct {
	SessionsTotal  *prometheus.CounterVec
	SessionsActive prometheus.Gauge
	OpenDuration   prometheus.Histogram
	EdgeBytes      *prometheus.CounterVec
	MethodCalls    *prometheus.CounterVec
	// MethodRetries counts tunnelOpen calls repeated because IoT Hub
	// answered 404103 (see core.Opener).
	MethodRetries prometheus.Counter

	PlayerBytes      *prometheus.CounterVec
	Viewers          *prometheus.GaugeVec
	UpstreamState    *prometheus.GaugeVec
	UpstreamOpen     *prometheus.HistogramVec
	UpstreamRestarts *prometheus.CounterVec
	PlayerJoin       *prometheus.HistogramVec
	PlayerDropped    *prometheus.CounterVec
	Refused          *prometheus.CounterVec
	// ModuleOpenFailures counts tunnelOpen calls the module refused, by the
	// cause its answer gives (labels: core.Causes, created by core.Server).
	ModuleOpenFailures *prometheus.CounterVec

	// WebRTC counts browser (WHEP) viewers.
	WebRTC *WebRTC
}

// New creates the collectors and registers them with reg. It fails if any
// of them is already registered.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		SessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_sessions_total",
			Help: "Tunnel sessions (tunnelOpen calls) ended, by camera and outcome.",
		}, []string{"camera", "outcome"}),
		SessionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_sessions_active",
			Help: "Tunnel sessions opening or open.",
		}),
		OpenDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_open_duration_seconds",
			Help:    "Time from the start of a tunnelOpen call until the module's websocket is up.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30},
		}),
		EdgeBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_edge_bytes_total",
			Help: "Bytes on the edge link (tunnel payload), by camera and direction (to_camera, from_camera).",
		}, []string{"camera", "direction"}),
		MethodCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_method_calls_total",
			Help: "tunnelOpen direct method calls, by status: the module's status when IoT Hub delivered the call, hub_<code> when IoT Hub refused it, error when no HTTP answer came.",
		}, []string{"status"}),
		MethodRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_method_retries_total",
			Help: "tunnelOpen calls repeated because IoT Hub answered 404103 (the module not connected or not subscribed to methods, e.g. while it renews its token): the module never saw them.",
		}),
	}
	fast := []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	m.PlayerBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_player_bytes_total",
		Help: "RTP/RTCP bytes handed to players' queues (packets dropped for slow players excluded; passthrough: bytes written), by camera; divided by relay_edge_bytes_total{direction=\"from_camera\"} it is the fan-out ratio.",
	}, []string{"camera"})
	m.Viewers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "relay_viewers",
		Help: "Players watching, by camera.",
	}, []string{"camera"})
	m.UpstreamState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "relay_upstream_state",
		Help: "1 for the shared upstream's current state (idle, opening, live, reconnecting), by camera.",
	}, []string{"camera", "state"})
	m.UpstreamOpen = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "relay_upstream_open_duration_seconds",
		Help:    "Time from the first viewer's request until the camera's shared stream is live (tunnelOpen, websocket, RTSP DESCRIBE/SETUP/PLAY through the tunnel).",
		Buckets: fast,
	}, []string{"camera"})
	m.UpstreamRestarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_upstream_restarts_total",
		Help: "Shared upstream reconnects after the tunnel or the camera failed, by camera.",
	}, []string{"camera"})
	m.PlayerJoin = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "relay_player_join_duration_seconds",
		Help:    "Time from a player's DESCRIBE until the relay answers it, by camera (includes opening the upstream for the first viewer).",
		Buckets: fast,
	}, []string{"camera"})
	m.PlayerDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_player_packets_dropped_total",
		Help: "RTP/RTCP packets dropped because a player's queue was full (the player reads too slowly), by camera.",
	}, []string{"camera"})
	m.Refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_rtsp_refused_total",
		Help: "Player requests refused, by reason (bad_credentials, forbidden, not_found, rate_limited, limit, unavailable).",
	}, []string{"reason"})
	for _, c := range []prometheus.Collector{m.SessionsTotal, m.SessionsActive, m.OpenDuration, m.EdgeBytes, m.MethodCalls, m.MethodRetries,
		m.PlayerBytes, m.Viewers, m.UpstreamState, m.UpstreamOpen, m.UpstreamRestarts, m.PlayerJoin, m.PlayerDropped, m.Refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("failed to register metrics: %w", err)
		}
	}
	for _, r := range Refusals {
		m.Refused.WithLabelValues(r)
	}
	m.ModuleOpenFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_module_open_failures_total",
		Help: "tunnelOpen calls the module answered with an error, by the cause its message gives (proxy_auth, proxy_refused, proxy_unreachable, tls, timeout, dns, refused, http_status, handshake, network, address_refused, camera_unreachable, too_many_sessions, shutting_down, bad_request, other).",
	}, []string{"cause"})
	if err := reg.Register(m.ModuleOpenFailures); err != nil {
		return nil, fmt.Errorf("failed to register metrics: %w", err)
	}
	m.ModuleOpenFailures.WithLabelValues("other") // exported from the start; core.Server creates the other causes

	w, err := newWebRTC(reg)
	if err != nil {
		return nil, err
	}
	m.WebRTC = w
	return m, nil
}

// InitCamera creates camera's series at zero, so that rates work from the
// first session on. shared adds the upstream's series (state idle).
func (m *Metrics) InitCamera(camera string, shared bool) {
	for _, o := range Outcomes {
		m.SessionsTotal.WithLabelValues(camera, o)
	}
	for _, d := range []string{DirToCamera, DirFromCamera} {
		m.EdgeBytes.WithLabelValues(camera, d)
	}
	m.PlayerBytes.WithLabelValues(camera)
	m.Viewers.WithLabelValues(camera)
	m.PlayerDropped.WithLabelValues(camera)
	if shared {
		m.SetUpstreamState(camera, StateIdle)
		m.UpstreamRestarts.WithLabelValues(camera)
		m.WebRTC.initCamera(camera)
	}
}

// SetUpstreamState sets camera's relay_upstream_state: 1 for state, 0 for
// the others.
func (m *Metrics) SetUpstreamState(camera, state string) {
	for _, st := range States {
		v := 0.0
		if st == state {
			v = 1
		}
		m.UpstreamState.WithLabelValues(camera, st).Set(v)
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
