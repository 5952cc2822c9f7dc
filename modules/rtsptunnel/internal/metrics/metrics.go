package metrics

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configures New.
type Options struct {
	// IoTHub, EdgeDevice and Module become the constant labels iothub,
	// edge_device and module_name, the labels of IoT Edge's built-in metrics
	// (edgeAgent's and edgeHub's), so that one query joins ours with theirs.
	// Empty ones are left out. instance_number, the built-in metrics' fourth
	// label, counts edgeAgent restarts and is not known to a module.
	IoTHub, EdgeDevice, Module string
	// HealthGrace is how long /healthz stays healthy after start and after a
	// hub disconnect. Zero means 60s.
	HealthGrace time.Duration
}

// Metrics is the module's set of collectors. It is a prometheus.Collector:
// New registers it. Safe for concurrent use; nil-safe.
type Metrics struct {
	sessionsActive prometheus.Gauge
	sessionsOpened prometheus.Counter
	sessionsFailed *prometheus.CounterVec
	sessionsClosed *prometheus.CounterVec
	bytes          *prometheus.CounterVec
	toRemote       prometheus.Counter
	toCamera       prometheus.Counter
	openDuration   prometheus.Histogram
	hubConnected   prometheus.Gauge
	hubReconnects  prometheus.Counter
	methodCalls    *prometheus.CounterVec

	grace time.Duration

	mu         sync.Mutex // guards the hub state below
	connected  bool
	everUp     bool
	lastChange time.Time // start, or the last hub state change
}

const namespace = "rtsptunnel"

// New creates the collectors and registers them on reg.
func New(reg prometheus.Registerer, opts Options) (*Metrics, error) {
	labels := prometheus.Labels{}
	for name, v := range map[string]string{"iothub": opts.IoTHub, "edge_device": opts.EdgeDevice, "module_name": opts.Module} {
		if v != "" {
			labels[name] = v
		}
	}
	o := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: namespace, Name: name, Help: help, ConstLabels: labels}
	}
	m := &Metrics{
		sessionsActive: prometheus.NewGauge(prometheus.GaugeOpts(o("sessions_active", "Tunnels open now."))),
		sessionsOpened: prometheus.NewCounter(prometheus.CounterOpts(o("sessions_opened_total", "Tunnels opened successfully."))),
		sessionsFailed: prometheus.NewCounterVec(prometheus.CounterOpts(o("sessions_failed_total", "tunnelOpen calls that failed, by reason.")), []string{"reason"}),
		sessionsClosed: prometheus.NewCounterVec(prometheus.CounterOpts(o("sessions_closed_total", "Tunnels that ended, by reason.")), []string{"reason"}),
		bytes:          prometheus.NewCounterVec(prometheus.CounterOpts(o("bytes_total", "Bytes delivered through tunnels, by direction.")), []string{"direction"}),
		openDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "open_duration_seconds", ConstLabels: labels,
			Help:    "Time to open a tunnel (camera and websocket dials), successful or not.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30},
		}),
		hubConnected:  prometheus.NewGauge(prometheus.GaugeOpts(o("hub_connected", "1 while the IoT Hub (edgeHub) connection is up."))),
		hubReconnects: prometheus.NewCounter(prometheus.CounterOpts(o("hub_reconnects_total", "IoT Hub (edgeHub) connections after the first."))),
		methodCalls:   prometheus.NewCounterVec(prometheus.CounterOpts(o("method_calls_total", "Direct method calls answered, by method and status.")), []string{"method", "status"}),
		grace:         opts.HealthGrace,
		lastChange:    time.Now(),
	}
	if m.grace <= 0 {
		m.grace = 60 * time.Second
	}
	m.toRemote = m.bytes.WithLabelValues("to_remote")
	m.toCamera = m.bytes.WithLabelValues("to_camera")
	if err := reg.Register(m); err != nil {
		return nil, fmt.Errorf("failed to register metrics: %w", err)
	}
	return m, nil
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.sessionsActive, m.sessionsOpened, m.sessionsFailed, m.sessionsClosed, m.bytes,
		m.openDuration, m.hubConnected, m.hubReconnects, m.methodCalls}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// InitReasons creates the series of rtsptunnel_sessions_failed_total for each
// of failed and of rtsptunnel_sessions_closed_total for each of closed at
// zero, so that increase() and rate() see the first failure (a series born at
// 1 has no increase). The session manager calls it with its fixed sets.
func (m *Metrics) InitReasons(failed, closed []string) {
	if m == nil {
		return
	}
	for _, r := range failed {
		m.sessionsFailed.WithLabelValues(r)
	}
	for _, r := range closed {
		m.sessionsClosed.WithLabelValues(r)
	}
}

// SessionOpened records a tunnel that opened: opened_total and active go up.
func (m *Metrics) SessionOpened() {
	if m == nil {
		return
	}
	m.sessionsOpened.Inc()
	m.sessionsActive.Inc()
}

// SessionFailed records a failed tunnelOpen; reason must come from a fixed set.
func (m *Metrics) SessionFailed(reason string) {
	if m == nil {
		return
	}
	m.sessionsFailed.WithLabelValues(reason).Inc()
}

// SessionClosed records the end of a tunnel that SessionOpened counted;
// reason must come from a fixed set (tunnel.Reason).
func (m *Metrics) SessionClosed(reason string) {
	if m == nil {
		return
	}
	m.sessionsActive.Dec()
	m.sessionsClosed.WithLabelValues(reason).Inc()
}

// ObserveOpenDuration records how long a tunnelOpen that dialled took.
func (m *Metrics) ObserveOpenDuration(d time.Duration) {
	if m == nil {
		return
	}
	m.openDuration.Observe(d.Seconds())
}

// ByteCounters returns the bytes_total counters for each direction, to be
// added to as bytes flow. Nil Metrics give nil counters.
func (m *Metrics) ByteCounters() (toRemote, toCamera prometheus.Counter) {
	if m == nil {
		return nil, nil
	}
	return m.toRemote, m.toCamera
}

// MethodCall records an answered direct method call.
func (m *Metrics) MethodCall(method string, status int) {
	if m == nil {
		return
	}
	m.methodCalls.WithLabelValues(method, strconv.Itoa(status)).Inc()
}

// SetHubConnected records the hub connection state; the hub client calls it on
// every change. A connection after the first counts as a reconnect.
func (m *Metrics) SetHubConnected(connected bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if connected == m.connected {
		return
	}
	m.connected = connected
	m.lastChange = time.Now()
	if connected {
		m.hubConnected.Set(1)
		if m.everUp {
			m.hubReconnects.Inc()
		}
		m.everUp = true
	} else {
		m.hubConnected.Set(0)
	}
}

// Healthy reports whether the module counts as healthy at now, with a short
// reason: the hub is connected, or start or the last disconnect was less than
// the health grace ago.
func (m *Metrics) Healthy(now time.Time) (bool, string) {
	if m == nil {
		return true, "no metrics"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch since := now.Sub(m.lastChange); {
	case m.connected:
		return true, "hub connected"
	case since < m.grace && !m.everUp:
		return true, "starting: hub not connected yet"
	case since < m.grace:
		return true, "hub reconnecting"
	case !m.everUp:
		return false, fmt.Sprintf("hub not connected %s after start", since.Round(time.Second))
	default:
		return false, fmt.Sprintf("hub disconnected for %s", since.Round(time.Second))
	}
}
