package session

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/tunnel"
)

// MethodName is the direct method the Manager answers.
const MethodName = "tunnelOpen"

// Manager answers tunnelOpen and owns every tunnel it opened.
//
// Set the exported fields, call Initialize, then HandleTunnelOpen from any
// number of goroutines; Shutdown closes every tunnel and waits for them.
type Manager struct {
	// Settings are the settings at start, read by Initialize only; change
	// them later with SetSettings.
	Settings settings.Settings
	// Logger receives one line per open, close and failed call; nil discards.
	Logger *slog.Logger
	// Metrics records sessions, bytes and method calls; nil records nothing.
	Metrics *metrics.Metrics
	// Version is the module version sent in the websocket User-Agent.
	Version string

	// dialCamera dials the camera; a test hook (export_test.go). Nil means net.Dialer.
	dialCamera func(ctx context.Context, network, addr string) (net.Conn, error)
	// lookupNetIP and dialRemote resolve and dial the remote endpoint; test
	// hooks (export_test.go) so that tests of the address checks never send
	// a packet anywhere. Nil means the tunnel package's defaults.
	lookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
	dialRemote  func(ctx context.Context, network, addr string) (net.Conn, error)

	// Static after Initialize.
	runCtx    context.Context // cancelled by Shutdown: tunnels close with 1001
	stopRun   context.CancelFunc
	changed   chan struct{} // capacity 1: a pending change notification
	userAgent string
	wg        sync.WaitGroup // one per running tunnel goroutine

	mu          sync.Mutex // guards everything below
	cfg         config
	stopping    bool
	opening     int                 // calls that reserved a slot and are dialling
	live        map[string]*session // running tunnels by id
	closed      []*session          // ended tunnels, in close order, kept for retention
	opened      uint64
	failed      uint64
	lastError   string
	lastErrorAt time.Time
	expiry      *time.Timer // fires when the oldest closed session expires
}

// config is the settings snapshot a call (and its tunnel) uses.
type config struct {
	s     settings.Settings
	roots *x509.CertPool // remote roots; nil means the system roots
}

// session is one tunnel. Identity fields are static after registration; stats
// is updated by the tunnel; the close fields are set once, under Manager.mu.
type session struct {
	id         string
	remote     string // endpoint without query, for logs
	remoteHost string
	localPort  int
	target     string
	opened     time.Time
	stats      tunnel.Stats

	closedAt  time.Time // guarded by Manager.mu
	result    tunnel.Result
	lastError string
}

// Initialize prepares the Manager with m.Settings. It fails when the remote CA
// file cannot be loaded.
func (m *Manager) Initialize() error {
	if m.Logger == nil {
		m.Logger = slog.New(slog.DiscardHandler)
	}
	m.runCtx, m.stopRun = context.WithCancel(context.Background())
	m.changed = make(chan struct{}, 1)
	m.live = make(map[string]*session)
	m.userAgent = tunnel.UserAgent(m.Version)
	m.initMetrics()
	if err := m.SetSettings(m.Settings); err != nil {
		m.stopRun()
		return err
	}
	return nil
}

// initMetrics creates every failure and close reason series at zero, so that
// increase() over them sees the first failure.
func (m *Manager) initMetrics() {
	failed := make([]string, len(FailReasons))
	for i, r := range FailReasons {
		failed[i] = string(r)
	}
	closed := make([]string, len(tunnel.Reasons))
	for i, r := range tunnel.Reasons {
		closed[i] = string(r)
	}
	m.Metrics.InitReasons(failed, closed)
}

// SetSettings makes s the settings of later tunnelOpen calls; running tunnels
// keep theirs. s must be valid (as settings.FromEnv and Settings.Apply return
// them). On error (the remote CA file cannot be loaded) nothing changes.
func (m *Manager) SetSettings(s settings.Settings) error {
	roots, err := s.RemoteRootCAs()
	if err != nil {
		return fmt.Errorf("failed to apply settings: %w", err)
	}
	m.mu.Lock()
	m.cfg = config{s: s, roots: roots}
	m.mu.Unlock()
	m.notify() // retention or limits may have changed
	return nil
}

// Changed returns a channel that receives a value (coalesced) whenever the
// Snapshot may have changed: a tunnel opened or closed, a call failed, a closed
// session expired. It has a single consumer (the reporter).
func (m *Manager) Changed() <-chan struct{} { return m.changed }

func (m *Manager) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// HandleTunnelOpen answers one tunnelOpen call with a status and a JSON body
// (see the package documentation). Safe for concurrent use; it never holds a
// lock while dialling and returns within the openTimeout setting. It records
// rtsptunnel_method_calls_total for tunnelOpen itself.
func (m *Manager) HandleTunnelOpen(ctx context.Context, payload []byte) (status int, body []byte) {
	start := time.Now()
	m.mu.Lock()
	cfg := m.cfg
	m.mu.Unlock()

	sess, oerr := m.open(ctx, payload, cfg, start)
	if oerr != nil {
		m.recordFailure(oerr, start)
		m.Metrics.MethodCall(MethodName, oerr.status)
		return oerr.status, oerr.body()
	}
	m.Metrics.MethodCall(MethodName, http.StatusOK)
	body, _ = json.Marshal(struct {
		SessionID string `json:"sessionId"`
		Target    string `json:"target"`
	}{sess.id, sess.target})
	return http.StatusOK, body
}

// open validates, reserves a slot, dials both sides and starts the tunnel.
func (m *Manager) open(ctx context.Context, payload []byte, cfg config, start time.Time) (*session, *openError) {
	req, oerr := parseRequest(payload, cfg.s)
	if oerr != nil {
		return nil, oerr
	}
	if oerr := m.reserve(req, cfg.s.MaxSessions); oerr != nil {
		return nil, oerr
	}
	camera, ws, oerr := m.connect(ctx, req, cfg)
	m.Metrics.ObserveOpenDuration(time.Since(start))

	m.mu.Lock()
	m.opening--
	if oerr == nil && m.stopping {
		camera.Close()
		ws.CloseNow()
		oerr = shuttingDown(req)
	}
	if oerr != nil {
		m.mu.Unlock()
		return nil, oerr
	}
	sess := &session{
		id:         newID(),
		remote:     req.redacted,
		remoteHost: req.host,
		localPort:  req.localPort,
		target:     req.target,
		opened:     time.Now(),
	}
	m.live[sess.id] = sess
	m.opened++
	m.wg.Add(1)
	m.mu.Unlock()

	m.Metrics.SessionOpened()
	log := m.Logger.With("session", sess.id, "camera", sess.target)
	log.Info("session opened", "remote", sess.remote, "local_port", sess.localPort, "open_duration", time.Since(start))
	go m.run(sess, camera, ws, cfg.s, log)
	m.notify()
	return sess, nil
}

// connect dials the camera, then the websocket, within openTimeout. On error
// nothing stays open.
func (m *Manager) connect(ctx context.Context, req *request, cfg config) (net.Conn, *tunnel.Conn, *openError) {
	ctx, cancel := context.WithTimeout(ctx, cfg.s.OpenTimeout)
	defer cancel()
	stop := context.AfterFunc(m.runCtx, cancel) // Shutdown aborts dials in progress
	defer stop()

	camera, err := m.dial(ctx, req.target, cfg.s.DialTimeout)
	if err != nil {
		if m.runCtx.Err() != nil {
			return nil, nil, shuttingDown(req)
		}
		return nil, nil, &openError{status: http.StatusBadRequest, target: req.target, message: "Could not connect to RTSP endpoint", reason: FailCameraUnreachable, cause: err}
	}
	ws, err := tunnel.Dial(ctx, req.endpoint, tunnel.DialOptions{
		Token:            req.token,
		UserAgent:        m.userAgent,
		RootCAs:          cfg.roots,
		HandshakeTimeout: cfg.s.HandshakeTimeout,
		CheckAddress:     addressGuard(cfg.s.AllowedRemoteHosts),
		LookupNetIP:      m.lookupNetIP,
		DialContext:      m.dialRemote,
	})
	if err != nil {
		camera.Close()
		if m.runCtx.Err() != nil {
			return nil, nil, shuttingDown(req)
		}
		var ae *tunnel.AddressError
		if errors.As(err, &ae) {
			e := badRequest("remoteEndpoint", "Remote host %q resolved to %s, a %s address; only a host named exactly in allowedRemoteHosts may reach one", req.hostname, ae.IP, ae.Rule)
			e.reason, e.cause = FailHostNotAllowed, err
			return nil, nil, e
		}
		status := tunnel.HTTPStatus(err)
		if status == 0 {
			status = http.StatusBadGateway
		}
		// The answer says why, so that the cloud side can tell a proxy's 407
		// from an untrusted certificate; the cause is token- and URL-free.
		message := "Could not open the websocket to remoteEndpoint"
		var de *tunnel.DialError
		if errors.As(err, &de) && de.Cause != "" {
			message += ": " + de.Cause
		}
		return nil, nil, &openError{status: status, target: req.redacted, message: message, reason: FailRemote, cause: err, summarized: true}
	}
	return camera, ws, nil
}

// reserve takes a session slot, or refuses while stopping or at the limit.
func (m *Manager) reserve(req *request, maxSessions int) *openError {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopping {
		return shuttingDown(req)
	}
	if len(m.live)+m.opening >= maxSessions {
		return &openError{status: http.StatusTooManyRequests, target: req.target,
			message: fmt.Sprintf("Too many sessions: the limit is %d", maxSessions), reason: FailTooManySessions}
	}
	m.opening++
	return nil
}

func shuttingDown(req *request) *openError {
	return &openError{status: http.StatusServiceUnavailable, target: req.target, message: "The module is shutting down", reason: FailShuttingDown}
}

func (m *Manager) dial(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if m.dialCamera != nil {
		return m.dialCamera(ctx, "tcp", addr)
	}
	return (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(ctx, "tcp", addr)
}

// recordFailure counts, remembers and logs a failed call once.
func (m *Manager) recordFailure(e *openError, start time.Time) {
	now := time.Now()
	m.mu.Lock()
	m.failed++
	m.lastError = truncate(e.lastError(), maxErrorLen)
	m.lastErrorAt = now
	m.mu.Unlock()
	m.Metrics.SessionFailed(string(e.reason))
	attrs := []any{"status", e.status, "reason", e.reason, "target", e.target, "message", e.message, "duration", now.Sub(start)}
	if e.cause != nil {
		attrs = append(attrs, "error", e.cause.Error()) // causes are token-free (tunnel.DialError redacts)
	}
	m.Logger.Warn("session open failed", attrs...)
	m.notify()
}

// newID returns a random UUID (version 4).
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

const maxErrorLen = 256

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
