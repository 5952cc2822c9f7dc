package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/identity"
)

// Transports.
const (
	// TransportMQTT is MQTT 3.1.1 over TLS, port 8883 by default.
	TransportMQTT = "mqtt"
	// TransportMQTTWS is MQTT over WebSockets (wss://host:443/$iothub/websocket),
	// through the proxy of HTTPS_PROXY/NO_PROXY.
	TransportMQTTWS = "mqttws"
)

// DefaultModelID is the IoT Plug and Play model id announced when
// Options.ModelID is empty: the original video service's tunnel model.
const DefaultModelID = "dtmi:azure:videoanalyzer:WebSocketTunneling;1"

// Tunables; the retry bounds are fields of Client so that tests can shorten them.
const (
	defaultRetryMin     = 500 * time.Millisecond // first retry after a failed connect
	defaultRetryMax     = 30 * time.Second       // backoff cap
	minStable           = 10 * time.Second       // a connection lost sooner counts as a failed attempt
	requestTimeout      = 30 * time.Second       // twin requests whose ctx has no deadline
	syncTimeout         = 30 * time.Second       // reading the twin after a connect
	respondTimeout      = 15 * time.Second       // publishing one method answer; also how long a replaced connection is kept for answers
	renewTimeout        = 10 * time.Second       // getting a token, or connecting, for a renewal (the old connection works meanwhile)
	drainTimeout        = 30 * time.Second       // a renewal serves the calls of the old connection this long at most (IoT Hub's default method timeout)
	drainQuiet          = 250 * time.Millisecond // ... and switches once no call arrived on it for this long (see drain)
	shutdownGrace       = 2 * time.Second        // Run waits this long for running method handlers
	minTokenLifetime    = 2 * time.Second
	maxErrorMessageSize = 200
	// A renewal starts at renewStart of the token's lifetime and waits for a
	// moment when the old connection is idle (see mqttConn.idle), until
	// renewDeadline of it, when it connects again whatever is in flight. With
	// 1 h tokens that leaves 24 minutes to find a moment between method calls
	// (tunnelOpen takes up to openTimeout, 20 s), and 6 minutes before the
	// token expires.
	renewStartNum, renewStartDen       = 1, 2
	renewDeadlineNum, renewDeadlineDen = 9, 10
)

// ErrNotConnected is returned (wrapped) by twin calls made while the client
// has no connection. Callers retry later; OnConnected tells them when.
var ErrNotConnected = errors.New("hub: not connected")

// StatusError is IoT Hub's refusal of a twin request: 400 for a bad
// document, 429 when throttled, and so on.
type StatusError struct {
	Status  int
	Message string // IoT Hub's answer, shortened
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hub: twin request answered %d: %s", e.Status, e.Message)
}

// Options configure a Client. Identity is required; zero values of the other
// fields mean the documented defaults.
type Options struct {
	// Identity authenticates the module; see package identity.
	Identity *identity.Identity
	// Transport is TransportMQTT (default) or TransportMQTTWS.
	Transport string
	// Port overrides the port: 0 means 8883 for mqtt and 443 for mqttws.
	Port int
	// TokenLifetime is the lifetime of each SAS token (default 1h, minimum 2s).
	// The client connects again with a fresh token between 50% and 90% of
	// it, losing no method call (see doc.go, "Token renewal").
	TokenLifetime time.Duration
	// ModelID is announced in the MQTT username (default DefaultModelID).
	ModelID string
	// Logger receives the client's logs (default: discarded). Tokens and keys
	// are never logged.
	Logger *slog.Logger
	// Proxy chooses the HTTP proxy for TransportMQTTWS (default
	// http.ProxyFromEnvironment: HTTPS_PROXY, NO_PROXY).
	Proxy func(*http.Request) (*url.URL, error)
	// RetryMax caps the exponential backoff between connect attempts
	// (default 30s). A gateway next to the module (edgeHub) can take a short
	// cap: the module is then back within that long of the gateway's return.
	RetryMax time.Duration
	// RetryMin is the first backoff between connect attempts (default 500ms);
	// tests shorten it.
	RetryMin time.Duration

	// OnConnectionChange is called from Run when the client goes from
	// disconnected to connected and back; not during a token renewal, which
	// replaces the connection without a gap. It must not block for long.
	OnConnectionChange func(connected bool)
	// OnTwin receives the full desired properties (with $version) after
	// every connect, including reconnects and token renewals: desired changes
	// made while the module was not connected are never pushed. It is also
	// called when pushed patches arrive with a gap in $version.
	OnTwin func(desired json.RawMessage)
	// OnDesiredPatch receives each pushed desired-properties patch (with
	// $version) in version order; stale and duplicate patches are dropped.
	// OnTwin and OnDesiredPatch are never called concurrently.
	OnDesiredPatch func(patch json.RawMessage)
	// OnConnected is called after every connect (reconnects and token
	// renewals included) once OnTwin has returned, so that the application
	// re-publishes its full reported state. It runs on its own goroutine
	// and may call UpdateReported.
	OnConnected func()
}

// Client is a connection to IoT Hub or edgeHub for one module or device
// identity: it answers direct methods, reads and patches the twin, and
// forwards desired-property changes. Create it with New, register methods
// with Handle, then call Run. Its methods are safe for concurrent use.
type Client struct {
	opts     Options       // normalized; static after New
	log      *slog.Logger  // static
	username string        // static
	broker   string        // static
	retryMin time.Duration // static after New (tests shorten it)
	retryMax time.Duration // static after New

	hmu      sync.RWMutex
	handlers map[string]MethodHandler // guarded by hmu

	started   atomic.Bool
	rid       atomic.Uint64
	connSeq   atomic.Uint64
	connected atomic.Bool   // last value passed to OnConnectionChange
	sem       chan struct{} // one token per running method handler

	mu  sync.Mutex
	cur *mqttConn // guarded by mu: the connection in use, nil when none
	// switching is set while a new connection is about to become cur: from
	// the start of a token renewal, or from a connect's CONNACK (methods may
	// arrive from then on) until it is installed. Requests wait for it
	// instead of failing.
	switching bool          // guarded by mu
	changed   chan struct{} // guarded by mu: closed and replaced when cur or switching change
	stopping  bool          // guarded by mu: Run is returning; no new goroutines in bg
	bg        sync.WaitGroup
	pubs      sync.WaitGroup // goroutines handing publishes to paho (mqttConn.startPublish)

	syncMu sync.Mutex // serializes the after-connect twin reads

	twinMu         sync.Mutex // serializes OnTwin and OnDesiredPatch
	desiredVersion int        // guarded by twinMu: highest desired $version delivered
	desiredFrom    *mqttConn  // guarded by twinMu: connection that delivered it
}

// New validates opts and returns a Client. It does not connect: Run does.
func New(opts Options) (*Client, error) {
	if opts.Identity == nil {
		return nil, errors.New("hub: Options.Identity is required")
	}
	opts.Transport = strings.ToLower(strings.TrimSpace(opts.Transport))
	switch opts.Transport {
	case "":
		opts.Transport = TransportMQTT
	case TransportMQTT, TransportMQTTWS:
	default:
		return nil, fmt.Errorf("hub: unknown transport %q (want %s or %s)", opts.Transport, TransportMQTT, TransportMQTTWS)
	}
	switch {
	case opts.Port == 0 && opts.Transport == TransportMQTT:
		opts.Port = 8883
	case opts.Port == 0:
		opts.Port = 443
	case opts.Port < 0 || opts.Port > 65535:
		return nil, fmt.Errorf("hub: port %d out of range", opts.Port)
	}
	if opts.TokenLifetime == 0 {
		opts.TokenLifetime = identity.DefaultTokenLifetime
	}
	if opts.TokenLifetime < minTokenLifetime {
		return nil, fmt.Errorf("hub: token lifetime %v is shorter than %v", opts.TokenLifetime, minTokenLifetime)
	}
	if opts.ModelID == "" {
		opts.ModelID = DefaultModelID
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Proxy == nil {
		opts.Proxy = http.ProxyFromEnvironment
	}
	id := opts.Identity
	c := &Client{
		opts:     opts,
		username: mqttUsername(id, opts.ModelID),
		broker:   brokerURL(opts.Transport, id.GatewayHostName, opts.Port),
		retryMin: defaultRetryMin,
		retryMax: defaultRetryMax,
		handlers: map[string]MethodHandler{},
		sem:      make(chan struct{}, MaxConcurrentMethods),
		changed:  make(chan struct{}),
	}
	if opts.RetryMin > 0 {
		c.retryMin = opts.RetryMin
	}
	if opts.RetryMax > 0 {
		c.retryMax = max(opts.RetryMax, c.retryMin)
	}
	c.log = opts.Logger.With("hub", id.HubHostName, "gateway", id.GatewayHostName,
		"client_id", id.ClientID(), "transport", opts.Transport)
	if opts.Transport == TransportMQTT {
		c.warnProxyIgnored()
	}
	return c, nil
}

// warnProxyIgnored logs, once at start, that a proxy configured for HTTPS
// is not used by the mqtt transport: behind a firewall that only lets the
// proxy out, the hub connection then times out on port 8883 with nothing
// else in the log to say why.
func (c *Client) warnProxyIgnored() {
	host := c.opts.Identity.GatewayHostName
	if host == "" {
		host = c.opts.Identity.HubHostName
	}
	req := &http.Request{URL: &url.URL{Scheme: "https", Host: host}}
	p, err := c.opts.Proxy(req)
	if err != nil || p == nil {
		return
	}
	c.log.Warn("an HTTPS proxy is configured, but the mqtt transport does not use it; set RTSPTUNNEL_HUBTRANSPORT=mqttws to reach the hub through the proxy on port 443",
		"proxy_host", p.Host)
}

// Handle registers h for the direct method named method, replacing any
// earlier handler. Calls of methods without a handler are answered 404
// {"code":"404","target":"<method>","message":"method is not implemented"}.
// Register before Run so that no call is answered 404 in between.
func (c *Client) Handle(method string, h MethodHandler) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if h == nil {
		delete(c.handlers, method)
		return
	}
	c.handlers[method] = h
}

func (c *Client) handler(method string) MethodHandler {
	c.hmu.RLock()
	defer c.hmu.RUnlock()
	return c.handlers[method]
}

// Connected reports whether the client has a connection now.
func (c *Client) Connected() bool {
	return c.connected.Load()
}

// Run connects and keeps the client connected until ctx is done, then
// disconnects, waits up to a few seconds for running method handlers (their
// ctx is cancelled) and returns nil. Failed connects are retried with capped
// exponential backoff and jitter, forever, except that a server certificate
// that fails verification before the first successful connect is returned as
// an error: that is a configuration mistake, not an outage. A connection whose
// subscription or initial twin read fails is dropped and rebuilt. The token is
// renewed by connecting again, between 50% and 90% of its lifetime, losing
// no method call (see renew and doc.go). Run may be called only once.
func (c *Client) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("hub: Run called more than once")
	}
	var (
		cur           *mqttConn
		failures      int  // failed connects (or short-lived connections) in a row
		everConnected bool // a certificate error is fatal only before this
		renewAt       time.Time
		renewFailures int
	)
	defer func() {
		if cur != nil {
			cur.close()
		}
		c.uninstall()
		c.stop()
	}()
	for {
		if cur == nil {
			if failures > 0 {
				d := backoff(failures, c.retryMin, c.retryMax)
				if !sleep(ctx, d) {
					return nil
				}
			}
			cn, err := c.connect(ctx, 0)
			if err != nil {
				c.setSwitching(false)
				if ctx.Err() != nil {
					return nil
				}
				if !everConnected && isCertificateError(err) {
					c.log.Error("TLS verification of the hub's certificate failed; check the trust bundle or CA file", "error", err)
					return fmt.Errorf("hub: %w", err)
				}
				failures++
				c.log.Warn("failed to connect", "attempt", failures, "error", err)
				continue
			}
			everConnected = true
			cur = cn
			renewAt = renewalStart(cn)
			renewFailures = 0
			c.install(ctx, cn)
			c.log.Info("connected", "conn", cn.id, "token_expiry", cn.expiry)
		}
		timer := time.NewTimer(time.Until(renewAt))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-cur.lost:
			timer.Stop()
			c.log.Warn("connection lost", "conn", cur.id, "error", cur.err())
			if time.Since(cur.issued) < minStable {
				failures++ // connect-then-drop loops back off like failed connects
			} else {
				failures = 0
			}
			cur.close()
			cur = nil
			c.uninstall()
		case <-timer.C:
			next, err := c.renew(ctx, cur)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				renewFailures++
				renewAt = time.Now().Add(backoff(renewFailures, c.retryMin, c.retryMax))
				c.log.Warn("failed to renew the token; keeping the current connection",
					"conn", cur.id, "token_expiry", cur.expiry, "error", err)
				continue
			}
			c.log.Info("renewed token", "old_conn", cur.id, "conn", next.id, "token_expiry", next.expiry)
			cur = next
			renewAt = renewalStart(next)
			renewFailures = 0
			failures = 0
		}
	}
}

// connect mints a token and opens one connection, within timeout when it
// is positive. ctx is also the context of the connection's method handlers.
func (c *Client) connect(ctx context.Context, timeout time.Duration) (*mqttConn, error) {
	dctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	token, expiry, err := c.opts.Identity.Token(dctx, c.opts.TokenLifetime)
	if err != nil {
		return nil, err
	}
	return c.dialWith(ctx, dctx, newToken{token, time.Now(), expiry})
}

// newToken is a SAS token and its lifetime.
type newToken struct {
	token          string // a secret
	issued, expiry time.Time
}

// dialWith opens one connection with tok. dctx bounds the attempt; ctx is
// the context of the connection's method handlers.
func (c *Client) dialWith(ctx, dctx context.Context, tok newToken) (*mqttConn, error) {
	cfg := dialConfig{
		broker:    c.broker,
		clientID:  c.opts.Identity.ClientID(),
		username:  c.username,
		password:  tok.token,
		tlsConf:   c.opts.Identity.TLSConfig(),
		proxy:     c.opts.Proxy,
		onConnack: func() { c.setSwitching(true) },
		handlers: connHandlers{
			onMethod: func(cn *mqttConn, name, rid string, payload []byte) {
				c.onMethod(ctx, cn, name, rid, payload)
			},
			onDesired: c.onDesired,
		},
	}
	id := c.connSeq.Add(1)
	cfg.log = c.log.With("conn", id)
	return dial(dctx, cfg, id, tok.issued, tok.expiry)
}

// renew replaces old with a new connection made with a fresh token, so that
// no caller sees a call fail in a way it cannot safely retry. edgeHub binds
// the new connection at once (with no subscriptions until it subscribes),
// closes the old one right after and fails the calls still waiting on it
// (504: the caller cannot tell whether the module acted); their answers,
// published anywhere, are dropped. So:
//
//  1. the token is minted first: a workload API that fails or hangs fails the
//     renewal (bounded by renewTimeout) and the old connection goes on;
//  2. the client waits until the old connection is idle (no method call in
//     flight, every publish acknowledged), until the renewal deadline, so
//     that the steps below take a moment only; the old connection keeps
//     serving meanwhile;
//  3. it unsubscribes the old connection from methods: from the UNSUBACK on,
//     edgeHub answers new calls 404 at once, which the caller retries (the
//     module never saw them);
//  4. it drains the old connection: the calls already delivered on it, and
//     those that arrive shortly after the UNSUBACK, are served and answered
//     on it, until it has been quiet for drainQuiet (see drain);
//  5. it connects (twin requests that fail on the old connection meanwhile
//     are retried on the new one) and subscribes; only then is the renewal
//     done. If the connect fails, the old connection subscribes to methods
//     again and goes on.
func (c *Client) renew(ctx context.Context, old *mqttConn) (*mqttConn, error) {
	tctx, cancel := context.WithTimeout(ctx, renewTimeout)
	token, expiry, err := c.opts.Identity.Token(tctx, c.opts.TokenLifetime)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("hub: failed to get a new token: %w", err)
	}
	tok := newToken{token, time.Now(), expiry}

	deadline := renewalDeadline(old)
	if !old.idle() {
		c.log.Info("token renewal waits for the method calls in flight", "conn", old.id, "calls", old.calls.Load(), "until", deadline)
	}
	if !old.waitIdle(ctx, deadline) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.log.Info("token renewal goes on with method calls in flight: they are answered before the switch",
			"conn", old.id, "calls", old.calls.Load(), "token_expiry", old.expiry)
	}

	unsubAt := time.Now()
	uctx, cancel := context.WithTimeout(ctx, renewTimeout)
	err = old.unsubscribeMethods(uctx)
	cancel()
	if err != nil {
		c.resumeMethods(ctx, old)
		return nil, fmt.Errorf("hub: %w", err)
	}
	c.drain(ctx, old, time.Since(unsubAt))

	c.mu.Lock()
	// From now on twin requests wait for the new connection (or are retried
	// on it), so that handlers calling them do not hold the old one busy.
	c.switching = true
	old.retired.Store(true)
	c.signalLocked()
	c.mu.Unlock()

	dctx, cancel := context.WithTimeout(ctx, renewTimeout)
	next, err := c.dialWith(ctx, dctx, tok)
	cancel()

	c.mu.Lock()
	c.switching = false
	if err == nil {
		c.cur = next
	} else {
		old.retired.Store(false)
	}
	c.signalLocked()
	c.mu.Unlock()
	if err != nil {
		c.resumeMethods(ctx, old)
		return nil, err
	}
	c.retire(old)
	c.startSync(ctx, next)
	return next, nil
}

// resumeMethods subscribes old to methods again after a renewal that did
// not complete. A connection that cannot is closed: Run rebuilds it, rather
// than keeping a connection the hub sends no calls to.
func (c *Client) resumeMethods(ctx context.Context, old *mqttConn) {
	if !old.alive() || ctx.Err() != nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, renewTimeout)
	defer cancel()
	if err := old.subscribeMethods(sctx); err != nil {
		c.log.Warn("closing the connection: it cannot take method calls again", "conn", old.id, "error", err)
		old.close()
	}
}

// drain waits, after old was unsubscribed from methods (which took rtt),
// until it is quiet: no call in flight, every publish acknowledged, and no
// call arrived for drainQuiet or 4 round trips, whichever is longer. edgeHub
// may send a request it dispatched before it processed the UNSUBSCRIBE after
// the UNSUBACK; a loaded hub, whose round trips are longer, gets longer. The
// wait is bounded by drainTimeout (callers do not wait longer for an answer)
// and by the token's remaining lifetime; the calls still in flight then fail
// with 504 at the switch (logged).
func (c *Client) drain(ctx context.Context, old *mqttConn, rtt time.Duration) {
	quiet := max(drainQuiet, 4*rtt)
	life := old.expiry.Sub(old.issued)
	start := time.Now()
	// At least one quiet period even when the token is already near its end
	// (edgeHub finds expired tokens only every 5 minutes).
	deadline := old.expiry.Add(-life / 20)
	if d := start.Add(quiet); deadline.Before(d) {
		deadline = d
	}
	if d := start.Add(drainTimeout); d.Before(deadline) {
		deadline = d
	}
	last, busySince := old.arrived.Load(), start
	for old.alive() && ctx.Err() == nil {
		now := time.Now()
		if n := old.arrived.Load(); n != last || !old.idle() {
			last, busySince = n, now
		} else if now.Sub(busySince) >= quiet {
			return
		}
		if !now.Before(deadline) {
			if !old.idle() {
				c.log.Warn("renewing the token with method calls in flight: the hub will answer them 504",
					"conn", old.id, "calls", old.calls.Load(), "token_expiry", old.expiry)
			}
			return
		}
		// Polling keeps the counters plain atomics on the hot path.
		time.Sleep(time.Millisecond)
	}
}

// retire closes a replaced connection once the answers of the calls that
// came in on it are acknowledged (the broker normally closes it first), or
// after respondTimeout.
func (c *Client) retire(old *mqttConn) {
	if !c.goBG() {
		old.close()
		return
	}
	go func() {
		defer c.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), respondTimeout)
		defer cancel()
		old.waitIdle(ctx, time.Now().Add(respondTimeout))
		old.close()
	}()
}

// setSwitching sets c.switching and wakes waiters.
func (c *Client) setSwitching(v bool) {
	c.mu.Lock()
	c.switching = v
	c.signalLocked()
	c.mu.Unlock()
}

// install makes cn the current connection and starts its twin sync.
func (c *Client) install(ctx context.Context, cn *mqttConn) {
	c.mu.Lock()
	c.cur = cn
	c.switching = false
	c.signalLocked()
	c.mu.Unlock()
	if !c.connected.Swap(true) && c.opts.OnConnectionChange != nil {
		c.opts.OnConnectionChange(true)
	}
	c.startSync(ctx, cn)
}

// uninstall forgets the current connection.
func (c *Client) uninstall() {
	c.mu.Lock()
	c.cur = nil
	c.signalLocked()
	c.mu.Unlock()
	if c.connected.Swap(false) && c.opts.OnConnectionChange != nil {
		c.opts.OnConnectionChange(false)
	}
}

// signalLocked wakes everyone waiting in acquire. c.mu must be held.
func (c *Client) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// goBG registers a background goroutine with c.bg unless Run is returning.
func (c *Client) goBG() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return false
	}
	c.bg.Add(1)
	return true
}

// stop waits (bounded) for method handlers and twin syncs after Run's ctx is done.
func (c *Client) stop() {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		c.bg.Wait()
		close(done)
	}()
	t := time.NewTimer(shutdownGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		c.log.Warn("method handlers still running after shutdown", "waited", shutdownGrace)
	}
	// A publish that paho took just as its connection died returns after
	// paho's write timeout; the connections are closed, so that is the bound.
	pubsDone := make(chan struct{})
	go func() {
		c.pubs.Wait()
		close(pubsDone)
	}()
	pt := time.NewTimer(writeTimeout)
	defer pt.Stop()
	select {
	case <-pubsDone:
	case <-pt.C:
	}
}

// acquire returns the connection to use. Without wait it fails at once with
// ErrNotConnected when there is none, unless a new connection is about to be
// installed (see switching): then it waits for it. With wait it waits for a
// connection until ctx is done.
func (c *Client) acquire(ctx context.Context, wait bool) (*mqttConn, error) {
	for {
		c.mu.Lock()
		cur, switching, changed, stopping := c.cur, c.switching, c.changed, c.stopping
		c.mu.Unlock()
		if cur != nil && cur.usable() {
			return cur, nil
		}
		if stopping || (!wait && !switching) {
			return nil, ErrNotConnected
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNotConnected, ctx.Err())
		}
	}
}

// startSync reads the twin on a new connection, delivers OnTwin, then calls
// OnConnected. A connection whose twin cannot be read is closed, so that Run
// rebuilds it: a half-working subscription must not go unnoticed.
func (c *Client) startSync(ctx context.Context, cn *mqttConn) {
	if !c.goBG() {
		return
	}
	go func() {
		defer c.bg.Done()
		c.syncMu.Lock()
		defer c.syncMu.Unlock()
		if !cn.alive() {
			return
		}
		sctx, cancel := context.WithTimeout(ctx, syncTimeout)
		defer cancel()
		r, err := c.twinRequestOn(sctx, cn, topicTwinGet, nil)
		if err != nil {
			if ctx.Err() == nil && cn.alive() {
				c.log.Warn("failed to read the twin after connecting; reconnecting", "conn", cn.id, "error", err)
				cn.close()
			}
			return
		}
		desired, _, err := splitTwin(r.body)
		if err != nil {
			c.log.Warn("ignoring a twin that does not parse", "conn", cn.id, "error", err)
		} else {
			c.twinMu.Lock()
			c.deliverTwinLocked(cn, desired)
			c.twinMu.Unlock()
		}
		if c.opts.OnConnected != nil && cn.alive() {
			c.opts.OnConnected()
		}
	}()
}

// deliverTwinLocked hands a full desired document to OnTwin unless a newer
// patch already arrived on the same connection. c.twinMu must be held.
func (c *Client) deliverTwinLocked(cn *mqttConn, desired json.RawMessage) {
	v, _ := desiredVersion(desired)
	if c.desiredFrom == cn && v < c.desiredVersion {
		return
	}
	c.desiredVersion, c.desiredFrom = v, cn
	if c.opts.OnTwin != nil {
		c.opts.OnTwin(desired)
	}
}

// onDesired handles a pushed desired patch (on a paho goroutine). Paho runs
// messages concurrently (OrderMatters off), so patches may arrive out of
// order: the next version is delivered, older ones are dropped, and a gap is
// filled by reading the full twin.
func (c *Client) onDesired(cn *mqttConn, payload []byte) {
	if !c.goBG() {
		return
	}
	defer c.bg.Done()
	patch := json.RawMessage(payload)
	v, ok := desiredVersion(patch)
	c.twinMu.Lock()
	defer c.twinMu.Unlock()
	switch {
	case ok && c.desiredFrom != nil && v <= c.desiredVersion:
		c.log.Debug("dropping a stale desired patch", "version", v, "have", c.desiredVersion)
		return
	case ok && c.desiredFrom != nil && v > c.desiredVersion+1:
		c.log.Info("desired patches arrived with a gap; reading the full twin", "version", v, "have", c.desiredVersion)
		ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
		defer cancel()
		r, err := c.twinRequestOn(ctx, cn, topicTwinGet, nil)
		if err == nil {
			var desired json.RawMessage
			if desired, _, err = splitTwin(r.body); err == nil {
				c.deliverTwinLocked(cn, desired)
				return
			}
		}
		c.log.Warn("failed to read the full twin; delivering the patch alone", "error", err)
	}
	if ok {
		c.desiredVersion, c.desiredFrom = v, cn
	}
	if c.opts.OnDesiredPatch != nil {
		c.opts.OnDesiredPatch(patch)
	}
}

// onMethod starts the handler of one method call (on a paho goroutine, which
// must not block) and answers it when it returns.
func (c *Client) onMethod(ctx context.Context, cn *mqttConn, name, rid string, payload []byte) {
	if !c.goBG() {
		cn.calls.Add(-1)
		return
	}
	select {
	case c.sem <- struct{}{}:
	default:
		go func() {
			defer c.bg.Done()
			c.log.Warn("refusing a method call: too many running", "method", name, "limit", MaxConcurrentMethods)
			c.answer(ctx, cn, name, rid, 429, errorBody(429, name, "too many concurrent method calls"))
		}()
		return
	}
	go func() {
		defer c.bg.Done()
		start := time.Now()
		status, body := invoke(ctx, c.log, name, c.handler(name), payload)
		<-c.sem
		c.log.Debug("method call", "method", name, "status", status, "duration", time.Since(start))
		c.answer(ctx, cn, name, rid, status, body)
	}()
}

// answer publishes a method response on the connection the request came in
// on, and nowhere else: edgeHub (and IoT Hub) match an answer with the
// pending call of the connection it arrives on and drop it elsewhere. If that
// connection is gone, the caller has had its 504 already.
func (c *Client) answer(ctx context.Context, cn *mqttConn, name, rid string, status int, body []byte) {
	defer cn.calls.Add(-1)
	actx, cancel := context.WithTimeout(ctx, respondTimeout)
	defer cancel()
	err := cn.publish(actx, methodResponseTopic(status, rid), body)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		c.log.Debug("method call not answered: shutting down", "method", name, "status", status)
	case errors.Is(err, errConnLost):
		c.log.Warn("method call not answered: the connection it came in on is gone", "method", name, "status", status, "conn", cn.id)
	default:
		c.log.Warn("failed to answer a method call", "method", name, "status", status, "error", err)
	}
}

// GetTwin reads the twin: the desired and reported properties, each with
// its $version. It fails with ErrNotConnected when there is no connection.
func (c *Client) GetTwin(ctx context.Context) (desired, reported json.RawMessage, err error) {
	r, err := c.twinRequest(ctx, topicTwinGet, nil)
	if err != nil {
		return nil, nil, err
	}
	return splitTwin(r.body)
}

// UpdateReported applies patch (a JSON object; null deletes a property) to
// the reported properties and returns their new $version. It is safe to call
// concurrently and from method handlers. It fails with ErrNotConnected when
// there is no connection (re-publish from OnConnected), and with a
// *StatusError when IoT Hub refuses the patch.
func (c *Client) UpdateReported(ctx context.Context, patch json.RawMessage) (version int, err error) {
	trimmed := strings.TrimSpace(string(patch))
	if !strings.HasPrefix(trimmed, "{") || !json.Valid(patch) {
		return 0, errors.New("hub: reported patch must be a JSON object")
	}
	if len(patch) > maxReported {
		return 0, fmt.Errorf("hub: reported patch of %d bytes exceeds IoT Hub's 32 KB limit", len(patch))
	}
	r, err := c.twinRequest(ctx, topicTwinPatch, patch)
	if err != nil {
		return 0, err
	}
	return r.version, nil
}

// twinRequest sends a twin request on the current connection. A request
// that fails because a token renewal replaced the connection is retried on
// the new one (GET and reported patches are idempotent).
func (c *Client) twinRequest(ctx context.Context, topicPrefix string, body []byte) (twinResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	for attempt := 0; ; attempt++ {
		cn, err := c.acquire(ctx, false)
		if err != nil {
			return twinResponse{}, err
		}
		r, err := c.twinRequestOn(ctx, cn, topicPrefix, body)
		if err != nil && errors.Is(err, errConnLost) && cn.retired.Load() && attempt < 2 {
			continue
		}
		return r, err
	}
}

// twinRequestOn sends a twin request on cn.
func (c *Client) twinRequestOn(ctx context.Context, cn *mqttConn, topicPrefix string, body []byte) (twinResponse, error) {
	rid := strconv.FormatUint(c.rid.Add(1), 10)
	r, err := cn.request(ctx, topicPrefix, rid, body)
	switch {
	case errors.Is(err, errConnLost):
		return r, fmt.Errorf("%w: %w", ErrNotConnected, err)
	case err != nil:
		return r, fmt.Errorf("hub: twin request: %w", err)
	case r.status < 200 || r.status > 299:
		msg := strings.TrimSpace(string(r.body))
		if len(msg) > maxErrorMessageSize {
			msg = msg[:maxErrorMessageSize] + "..."
		}
		return r, &StatusError{Status: r.status, Message: msg}
	}
	return r, nil
}

// splitTwin splits a twin GET answer into its desired and reported parts.
func splitTwin(b []byte) (desired, reported json.RawMessage, err error) {
	var t struct {
		Desired  json.RawMessage `json:"desired"`
		Reported json.RawMessage `json:"reported"`
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, nil, fmt.Errorf("hub: twin document does not parse: %w", err)
	}
	if len(t.Desired) == 0 || string(t.Desired) == "null" {
		t.Desired = json.RawMessage(`{}`)
	}
	if len(t.Reported) == 0 || string(t.Reported) == "null" {
		t.Reported = json.RawMessage(`{}`)
	}
	return t.Desired, t.Reported, nil
}

// desiredVersion returns the $version of a desired document or patch.
func desiredVersion(b []byte) (int, bool) {
	var v struct {
		Version *int `json:"$version"`
	}
	if json.Unmarshal(b, &v) != nil || v.Version == nil {
		return 0, false
	}
	return *v.Version, true
}

// renewalStart is when the replacement of a connection's token begins.
func renewalStart(cn *mqttConn) time.Time {
	life := cn.expiry.Sub(cn.issued)
	return cn.issued.Add(life * renewStartNum / renewStartDen)
}

// renewalDeadline is when a connection's token is replaced even if method
// calls are in flight on it.
func renewalDeadline(cn *mqttConn) time.Time {
	life := cn.expiry.Sub(cn.issued)
	return cn.issued.Add(life * renewDeadlineNum / renewDeadlineDen)
}

// backoff returns the delay before retry number attempt (1-based): min
// doubling up to max, with jitter in [d/2, d].
func backoff(attempt int, min, max time.Duration) time.Duration {
	d := max
	if attempt < 32 {
		if s := min << (attempt - 1); s > 0 && s < max {
			d = s
		}
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// isCertificateError reports whether err is a failed verification of the
// server's certificate.
func isCertificateError(err error) bool {
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		cerr x509.CertificateInvalidError
	)
	return errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &cerr)
}
