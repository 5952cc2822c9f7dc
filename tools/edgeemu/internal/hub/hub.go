// Package hub is the device side of the emulated IoT Hub / edgeHub: an MQTT 3.1.1 broker
// (mochi-mqtt) with IoT Hub's authentication, topic rules, direct methods and twins, plus the
// service-side operations (invoke a method, read and patch a twin) the REST API and the Go API
// call.
//
// mochi-mqtt supplies the MQTT protocol; everything IoT Hub-specific happens in hook callbacks.
// Clients are never routed to each other: every message a client publishes is consumed by the
// hub, and every message the hub sends goes to exactly one client through that client's
// outbound queue (see conn).
package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
)

// Transports, as reported in ConnInfo.Transport and the logs.
const (
	TransportMQTTS = "mqtts"
	TransportWSS   = "wss"
)

const (
	// maxPacketSize bounds an MQTT packet: IoT Hub's 256 KB message limit plus room for the
	// topic. Bigger packets get the connection closed, as IoT Hub does.
	maxPacketSize = 256*1024 + 4*1024
	// connectTimeout bounds the TLS handshake and the wait for CONNECT.
	connectTimeout = 30 * time.Second
	// outboundQueue is the per-client queue of hub → device messages. A client that lets it
	// fill up is disconnected rather than allowed to stall the hub.
	outboundQueue = 1024
)

// Config configures a Hub.
type Config struct {
	// HubHostName is the IoT Hub host name that usernames and SAS resources must name.
	HubHostName string
	// Store holds identities and twins.
	Store *registry.Store
	// MaxTokenLifetime, when positive, disconnects a client at most this long after it
	// connected even if its SAS token lasts longer (to exercise token renewal).
	MaxTokenLifetime time.Duration
	// TokenCheckInterval is how often token expiry is checked: a client whose token has
	// expired is disconnected at the next check. Zero means 5 minutes, edgeHub's
	// reauthentication period (edge-hub Microsoft.Azure.Devices.Edge.Hub.Core/
	// ConnectionReauthenticator.cs, reauthenticateFrequency); tests shorten it.
	TokenCheckInterval time.Duration
	// NoStoreAndForward is edgeHub with storeAndForwardEnabled=false: the subscriptions of a
	// persistent session (CleanSession=0) are not restored when the client connects again
	// (edge-hub Microsoft.Azure.Devices.Edge.Hub.Service/modules/MqttModule.cs picks
	// SessionStatePersistenceProvider, which stores nothing).
	NoStoreAndForward bool
	// Logger receives connects, disconnects, subscriptions, method calls and twin changes.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	// takeoverStage, when set, is called by bind's asynchronous part at each stage
	// ("close": before closing the old connection; "restore": before restoring the
	// session's subscriptions; "done"), so that tests can hold a window open.
	takeoverStage func(stage string)
}

// DefaultTokenCheckInterval is edgeHub's reauthentication period.
const DefaultTokenCheckInterval = 5 * time.Minute

// Hub is the emulated IoT Hub device endpoint. Create it with New; Close it once.
type Hub struct {
	cfg Config       // static
	log *slog.Logger // static
	srv *mqtt.Server // static

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	rid     atomic.Uint64 // method request ids
	connSeq atomic.Uint64 // connection numbers (mochi client ids, bind order)

	desiredMu sync.Mutex // serialises desired patches so pushes arrive in version order

	wg sync.WaitGroup // accept loops, connection handlers and per-client writers

	mu        sync.Mutex
	closing   bool                            // guarded by mu
	listeners []net.Listener                  // guarded by mu
	raw       map[net.Conn]struct{}           // guarded by mu; accepted connections not yet closed
	byClient  map[*mqtt.Client]*conn          // guarded by mu; authenticated clients
	live      map[registry.ID]*conn           // guarded by mu; the current connection of each identity
	stats     map[registry.ID]*ConnInfo       // guarded by mu; per identity, survives disconnects
	sessions  map[registry.ID]map[string]byte // guarded by mu; persistent sessions' filters → QoS
	changed   chan struct{}                   // guarded by mu; closed and replaced on every state change
	lose      map[registry.ID]int             // guarded by mu; desired patches still to lose (LoseDesiredPatches)
}

// New creates the hub and starts its broker. It does not listen: hand it connections with
// Serve and ServeWebSocket.
func New(cfg Config) (*Hub, error) {
	if cfg.Store == nil || cfg.HubHostName == "" {
		return nil, errors.New("hub: Store and HubHostName are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TokenCheckInterval <= 0 {
		cfg.TokenCheckInterval = DefaultTokenCheckInterval
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = maxPacketSize
	caps.MinimumProtocolVersion = 4 // MQTT 3.1.1 (v5 is refused in OnConnect)
	caps.MaximumQos = 1             // IoT Hub has no QoS 2
	caps.RetainAvailable = 0
	caps.SharedSubAvailable = 0
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		cfg:      cfg,
		log:      cfg.Logger,
		ctx:      ctx,
		cancel:   cancel,
		raw:      map[net.Conn]struct{}{},
		byClient: map[*mqtt.Client]*conn{},
		live:     map[registry.ID]*conn{},
		stats:    map[registry.ID]*ConnInfo{},
		sessions: map[registry.ID]map[string]byte{},
		changed:  make(chan struct{}),
	}
	h.srv = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		// mochi logs every client error at Warn; IoT Hub semantics are logged by the hooks.
		Logger: slog.New(minLevel{cfg.Logger.Handler(), slog.LevelError}).With("component", "mochi"),
		// $SYS topics are not IoT Hub's and nobody may subscribe to them; publish rarely.
		SysTopicResendInterval: 24 * 3600,
	})
	if err := h.srv.AddHook(&hook{h: h}, nil); err != nil {
		cancel()
		return nil, fmt.Errorf("failed to add broker hook: %w", err)
	}
	// Serve returns at once: with no mochi listeners it only starts the housekeeping loop.
	if err := h.srv.Serve(); err != nil {
		cancel()
		return nil, fmt.Errorf("failed to start broker: %w", err)
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.checkTokens()
	}()
	return h, nil
}

// checkTokens disconnects, every TokenCheckInterval, the clients whose token has expired, as
// edgeHub's ConnectionReauthenticator does (a client is not dropped the moment its token
// expires, but at the next check).
func (h *Hub) checkTokens() {
	t := time.NewTicker(h.cfg.TokenCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		now := h.cfg.Now()
		var expired []*conn
		h.mu.Lock()
		for _, c := range h.byClient {
			if !c.expiry.After(now) {
				expired = append(expired, c)
			}
		}
		h.mu.Unlock()
		for _, c := range expired {
			h.log.Info("token expired, disconnecting", "device", c.id.Device, "module", c.id.Module,
				"expiry", c.expiry.UTC().Format(time.RFC3339))
			c.cl.Stop(errTokenExpired)
		}
	}
}

// Close disconnects every client, stops the accept loops started by Serve and waits for all
// of the hub's goroutines. Pending method calls fail with ErrClosed.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return nil
	}
	h.closing = true
	lns := h.listeners
	conns := make([]net.Conn, 0, len(h.raw))
	for c := range h.raw {
		conns = append(conns, c)
	}
	h.mu.Unlock()

	h.cancel()
	for _, ln := range lns {
		ln.Close()
	}
	for _, c := range conns {
		c.Close()
	}
	h.wg.Wait()
	// Every EstablishConnection has returned, so mochi has no clients left to wait for.
	return h.srv.Close()
}

// Serve accepts MQTT-over-TLS connections from ln until Close. It returns at once.
func (h *Hub) Serve(ln net.Listener, tlsConfig *tls.Config) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return ErrClosed
	}
	h.listeners = append(h.listeners, ln)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if h.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				h.log.Warn("accept failed", "error", err)
				time.Sleep(50 * time.Millisecond) // e.g. EMFILE: do not spin
				continue
			}
			tc := tls.Server(c, tlsConfig)
			if !h.track(tc) {
				tc.Close()
				return
			}
			go func() {
				defer h.untrack(tc)
				ctx, cancel := context.WithTimeout(h.ctx, connectTimeout)
				err := tc.HandshakeContext(ctx)
				cancel()
				if err != nil {
					h.log.Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "error", err)
					tc.Close()
					return
				}
				h.establish(TransportMQTTS, tc)
			}()
		}
	}()
	return nil
}

// ServeWebSocket serves MQTT over WebSockets (IoT Hub's /$iothub/websocket, subprotocol
// "mqtt"). It blocks until the client's connection ends, as an http.Handler may.
func (h *Hub) ServeWebSocket(w http.ResponseWriter, r *http.Request) {
	if !offersSubprotocol(r, "mqtt") {
		http.Error(w, "the websocket subprotocol must be mqtt", http.StatusBadRequest)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{"mqtt"},
		// Not a browser API: IoT Hub does not check Origin either.
		InsecureSkipVerify: true,
	})
	if err != nil {
		h.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "error", err)
		return
	}
	nc := &wsConn{Conn: websocket.NetConn(h.ctx, ws, websocket.MessageBinary), ws: ws}
	if !h.track(nc) {
		nc.Close()
		return
	}
	defer h.untrack(nc)
	h.establish(TransportWSS, nc)
}

func offersSubprotocol(r *http.Request, want string) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), want) {
				return true
			}
		}
	}
	return false
}

// wsConn closes the websocket without the close handshake, which could wait seconds for an
// unresponsive peer; IoT Hub drops connections the same abrupt way.
type wsConn struct {
	net.Conn
	ws *websocket.Conn
}

func (c *wsConn) Close() error {
	c.ws.CloseNow()
	return c.Conn.Close()
}

// track registers an accepted connection so Close can close it; false once closing.
func (h *Hub) track(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.raw[c] = struct{}{}
	h.wg.Add(1)
	return true
}

func (h *Hub) untrack(c net.Conn) {
	c.Close()
	h.mu.Lock()
	delete(h.raw, c)
	h.mu.Unlock()
	h.wg.Done()
}

// establish runs the MQTT session on c until it ends.
func (h *Hub) establish(transport string, c net.Conn) {
	// Until CONNECT arrives; mochi then sets the keepalive deadline.
	_ = c.SetDeadline(time.Now().Add(connectTimeout))
	if err := h.srv.EstablishConnection(transport, c); err != nil {
		h.log.Debug("mqtt session ended", "transport", transport, "remote", c.RemoteAddr().String(), "error", err)
	}
}

// ConnInfo describes an identity's current or last MQTT connection.
type ConnInfo struct {
	// Connected is true while the identity has a live connection.
	Connected bool
	// Transport is TransportMQTTS or TransportWSS.
	Transport string
	// Remote is the client's address.
	Remote string
	// Username is the MQTT username as sent.
	Username string
	// APIVersion and ModelID come from the username (ModelID empty when none was announced).
	APIVersion, ModelID string
	// NonstandardUsername is set when the username did not follow IoT Hub's documented
	// "{hub}/{device}[/{module}]/?api-version=..." form (e.g. the legacy form without '?').
	NonstandardUsername bool
	// ConnectedAt is when the connection was accepted; TokenExpiry when it will be (or was)
	// dropped for its SAS token (after MaxTokenLifetime clamping).
	ConnectedAt, TokenExpiry time.Time
	// LastActivity is the time of the last connect, disconnect or message.
	LastActivity time.Time
	// Connects counts successful connections since the hub started.
	Connects int
}

// Info returns the identity's connection information; ok is false if it never connected.
func (h *Hub) Info(id registry.ID) (info ConnInfo, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.stats[id]
	if !ok {
		return ConnInfo{}, false
	}
	info = *s
	info.Connected = h.liveLocked(id) != nil
	return info, true
}

// liveLocked returns the identity's live connection, or nil; h.mu must be held. A connection
// whose CONNACK could not be written never reaches OnDisconnect, hence the Closed check.
func (h *Hub) liveLocked(id registry.ID) *conn {
	c := h.live[id]
	if c == nil || c.closed() {
		return nil
	}
	return c
}

// Disconnect drops the identity's connection, if any, the way IoT Hub drops one (the TCP
// connection closes; there is no DISCONNECT packet in MQTT 3.1.1).
func (h *Hub) Disconnect(id registry.ID) {
	h.mu.Lock()
	c := h.liveLocked(id)
	h.mu.Unlock()
	if c != nil {
		c.cl.Stop(errKicked)
	}
}

// Wait blocks until cond returns true (evaluated after every connect, disconnect,
// subscription change and twin change) or ctx ends.
func (h *Hub) Wait(ctx context.Context, cond func() bool) error {
	for {
		h.mu.Lock()
		ch := h.changed
		h.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-h.ctx.Done():
			return ErrClosed
		}
	}
}

// Subscribed reports whether the identity is connected with a subscription matching topic.
func (h *Hub) Subscribed(id registry.ID, topic string) bool {
	h.mu.Lock()
	c := h.liveLocked(id)
	h.mu.Unlock()
	return c != nil && c.subscribed(topic)
}

// notifyLocked wakes Wait callers; h.mu must be held.
func (h *Hub) notifyLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *Hub) notify() {
	h.mu.Lock()
	h.notifyLocked()
	h.mu.Unlock()
}

// minLevel is a slog.Handler that drops records below a level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.level && m.Handler.Enabled(ctx, l)
}

func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{m.Handler.WithAttrs(a), m.level}
}

func (m minLevel) WithGroup(g string) slog.Handler {
	return minLevel{m.Handler.WithGroup(g), m.level}
}

// stopCause is why the hub ended a client's connection.
type stopCause string

func (s stopCause) Error() string { return string(s) }

const (
	errTokenExpired stopCause = "SAS token expired"
	errKicked       stopCause = "disconnected by the emulator (fault injection)"
	errTakenOver    stopCause = "another client connected with the same identity"
	errForbidden    stopCause = "published to a topic it is not authorized for"
	errQueueFull    stopCause = "outbound queue full (client not reading)"
	errQoS2         stopCause = "published at QoS 2, which IoT Hub does not support"
)

// HasSubscription reports whether the identity is connected and subscribed with exactly this
// topic filter (e.g. "$iothub/methods/POST/#").
func (h *Hub) HasSubscription(id registry.ID, filter string) bool {
	h.mu.Lock()
	c := h.liveLocked(id)
	h.mu.Unlock()
	return c != nil && c.hasFilter(filter)
}
