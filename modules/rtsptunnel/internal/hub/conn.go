package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Timeouts of one connection.
const (
	connectTimeout = 15 * time.Second // TCP + TLS/WebSocket + CONNACK
	subackTimeout  = 15 * time.Second
	keepAlive      = 30 * time.Second
	pingTimeout    = 10 * time.Second
	writeTimeout   = 10 * time.Second
	disconnectWait = 250 // ms paho may spend sending DISCONNECT
)

// errConnLost is returned by requests on a connection that is gone.
var errConnLost = errors.New("connection lost")

// twinResponse is a $iothub/twin/res message.
type twinResponse struct {
	status  int
	version int
	body    []byte
}

// connHandlers receive what arrives on a connection. They are called on
// paho's goroutines (one per message, OrderMatters is off) and must not
// block for long: onMethod only starts the handler goroutine.
type connHandlers struct {
	onMethod  func(cn *mqttConn, name, rid string, payload []byte)
	onDesired func(cn *mqttConn, payload []byte)
}

// dialConfig is everything needed to open one connection.
type dialConfig struct {
	broker   string // tls://host:port or wss://host:port/$iothub/websocket
	clientID string
	username string
	password string // SAS token: a secret
	tlsConf  *tls.Config
	proxy    func(*http.Request) (*url.URL, error)
	log      *slog.Logger
	handlers connHandlers
	// onConnack, if set, is called once the hub accepted the connection,
	// before subscribing: from then on methods may arrive.
	onConnack func()
	// pubs counts publishing goroutines (see mqttConn.startPublish).
	pubs *sync.WaitGroup
}

// mqttConn is one MQTT connection to IoT Hub or edgeHub: a paho client with
// automatic reconnection turned off, so that every reconnect builds a new
// mqttConn with a fresh token and fresh subscriptions (the SDK subscribes
// once and ignores a failed re-subscription; see doc.go).
type mqttConn struct {
	client   mqtt.Client // static after dial
	id       uint64      // connection number, for logs; static
	issued   time.Time   // when its token was minted; static
	expiry   time.Time   // when its token expires; static
	log      *slog.Logger
	lost     chan struct{} // closed once the connection is gone (lost or closed)
	lostOnce sync.Once
	lostErr  error // written before lost is closed

	// retired is set by the Client before it replaces this connection on
	// purpose (token renewal): no new publishes start on it, the broker will
	// drop it, and requests that fail because of that are retried on the
	// successor.
	retired atomic.Bool
	// publishing counts publishes whose PUBACK has not arrived yet; see idle.
	publishing atomic.Int64
	// pubs counts the goroutines handing publishes to paho (startPublish); it
	// is the Client's, shared by all its connections.
	pubs *sync.WaitGroup
	// calls counts method requests that arrived on this connection and whose
	// answer the broker has not acknowledged yet; see idle.
	calls atomic.Int64
	// arrived counts every method request that arrived on this connection,
	// so that a token renewal notices one that came and went between two
	// looks at calls (see Client.drain).
	arrived atomic.Uint64
	// methodRoute is the paho handler of method requests (routeMethod).
	methodRoute mqtt.MessageHandler

	mu      sync.Mutex
	pending map[string]chan twinResponse // guarded by mu; nil once lost
}

// dial connects, subscribes and returns a live connection. ctx bounds the
// whole attempt.
func dial(ctx context.Context, cfg dialConfig, id uint64, issued, expiry time.Time) (*mqttConn, error) {
	cn := &mqttConn{
		id:      id,
		issued:  issued,
		expiry:  expiry,
		log:     cfg.log,
		lost:    make(chan struct{}),
		pending: map[string]chan twinResponse{},
		pubs:    cfg.pubs,
	}
	if cn.pubs == nil {
		cn.pubs = &sync.WaitGroup{}
	}
	o := mqtt.NewClientOptions()
	o.AddBroker(cfg.broker)
	o.SetClientID(cfg.clientID)
	o.SetUsername(cfg.username)
	o.SetPassword(cfg.password)
	o.SetTLSConfig(cfg.tlsConf)
	o.SetProtocolVersion(4) // MQTT 3.1.1, the only version IoT Hub speaks
	// Trap 1/2: paho's ordered routing runs handlers one at a time on its
	// router goroutine, so a handler that waits for anything paho delivers
	// (a twin response, a PUBACK) deadlocks the client.
	o.SetOrderMatters(false)
	// Trap 5/7/8: one paho client per connection. Reconnects, token renewal
	// and re-subscription are done by Client.Run, never silently by paho.
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	// A persistent session, as the device SDKs use. We subscribe on every
	// connection all the same: edgeHub restores a stored session's
	// subscriptions only asynchronously after the takeover (and not at all
	// without store and forward), and a token renewal unsubscribed the old
	// connection from methods (see Client.renew).
	o.SetCleanSession(false)
	o.SetResumeSubs(false)
	o.SetKeepAlive(keepAlive)
	o.SetPingTimeout(pingTimeout)
	o.SetConnectTimeout(connectTimeout)
	o.SetWriteTimeout(writeTimeout)
	o.SetWebsocketOptions(&mqtt.WebsocketOptions{Proxy: cfg.proxy})
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		cn.markLost(fmt.Errorf("%w: %w", errConnLost, err))
	})
	cn.methodRoute = cn.routeMethod(cfg.handlers.onMethod)
	// paho deletes a filter's route as soon as it sends the UNSUBSCRIBE, but
	// the broker may still deliver requests it dispatched before it processed
	// it (a token renewal unsubscribes from methods and serves those, see
	// Client.renew): they come here and are served all the same.
	o.SetDefaultPublishHandler(func(cl mqtt.Client, m mqtt.Message) {
		if strings.HasPrefix(m.Topic(), prefixMethodPost) {
			cn.methodRoute(cl, m)
			return
		}
		cn.log.Debug("ignoring a message on an unexpected topic", "topic", m.Topic())
	})
	c := mqtt.NewClient(o)
	// Routes before Connect: a resumed session may deliver right after CONNACK.
	c.AddRoute(filterMethods, cn.methodRoute)
	c.AddRoute(filterTwinRes, cn.routeTwinResponse)
	c.AddRoute(filterDesired, func(_ mqtt.Client, m mqtt.Message) {
		cfg.handlers.onDesired(cn, m.Payload())
	})
	cn.client = c

	tok := c.Connect()
	if err := waitToken(ctx, tok, connectTimeout+time.Second, nil); err != nil {
		// paho finishes (or times out) the attempt by itself; make sure a
		// late success is closed rather than left running.
		go func() {
			<-tok.Done()
			if tok.Error() == nil {
				c.Disconnect(0)
			}
		}()
		cn.markLost(err)
		return nil, fmt.Errorf("failed to connect to %s: %w", cfg.broker, err)
	}
	if cfg.onConnack != nil {
		cfg.onConnack()
	}
	sub := c.SubscribeMultiple(map[string]byte{filterMethods: 1, filterTwinRes: 1, filterDesired: 1}, nil)
	if err := waitToken(ctx, sub, subackTimeout, cn.lost); err != nil {
		cn.close()
		return nil, fmt.Errorf("failed to subscribe: %w", err)
	}
	for filter, code := range sub.(*mqtt.SubscribeToken).Result() {
		if code > 2 { // 0x80: refused
			cn.close()
			return nil, fmt.Errorf("failed to subscribe: %s refused (return code %#x)", filter, code)
		}
	}
	return cn, nil
}

// waitToken waits for a paho token, the connection's end (when lost is not
// nil), ctx or timeout, whichever comes first.
func waitToken(ctx context.Context, tok mqtt.Token, timeout time.Duration, lost <-chan struct{}) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-lost:
		return errConnLost
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("no answer within %v", timeout)
	}
}

// routeMethod returns the paho handler for method requests.
func (cn *mqttConn) routeMethod(onMethod func(*mqttConn, string, string, []byte)) mqtt.MessageHandler {
	return func(_ mqtt.Client, m mqtt.Message) {
		name, rid, err := parseMethodTopic(m.Topic())
		if err != nil {
			cn.log.Warn("ignoring method request", "error", err)
			return
		}
		cn.calls.Add(1) // until its answer is acknowledged (Client.answer)
		cn.arrived.Add(1)
		if cn.retired.Load() {
			// It arrived after the renewal found this connection quiet,
			// unsubscribed from methods, while it connects the new one: the
			// hub closes this connection when the new one is bound and fails
			// the call unless it is answered first (see Client.drain).
			cn.log.Info("method call arrived on a connection being replaced", "method", name)
		}
		onMethod(cn, name, rid, m.Payload())
	}
}

// unsubscribeMethods asks the broker to stop sending method requests on cn
// and waits for its UNSUBACK. edgeHub answers the calls it receives from
// then on 404 at once (see doc.go); requests it dispatched before still
// arrive, and are served (see dial's default handler).
func (cn *mqttConn) unsubscribeMethods(ctx context.Context) error {
	if err := waitToken(ctx, cn.client.Unsubscribe(filterMethods), subackTimeout, cn.lost); err != nil {
		return fmt.Errorf("failed to unsubscribe from methods: %w", err)
	}
	return nil
}

// subscribeMethods subscribes cn to method requests again (a renewal that
// could not connect keeps the old connection).
func (cn *mqttConn) subscribeMethods(ctx context.Context) error {
	tok := cn.client.Subscribe(filterMethods, 1, cn.methodRoute)
	if err := waitToken(ctx, tok, subackTimeout, cn.lost); err != nil {
		return fmt.Errorf("failed to subscribe to methods again: %w", err)
	}
	if code := tok.(*mqtt.SubscribeToken).Result()[filterMethods]; code > 2 {
		return fmt.Errorf("failed to subscribe to methods again: refused (return code %#x)", code)
	}
	return nil
}

// routeTwinResponse hands a twin response to the request waiting for its $rid.
func (cn *mqttConn) routeTwinResponse(_ mqtt.Client, m mqtt.Message) {
	status, rid, version, err := parseTwinResponseTopic(m.Topic())
	if err != nil {
		cn.log.Warn("ignoring twin response", "error", err)
		return
	}
	cn.mu.Lock()
	ch := cn.pending[rid]
	delete(cn.pending, rid)
	cn.mu.Unlock()
	if ch == nil {
		cn.log.Debug("ignoring twin response for an unknown request", "rid", rid, "status", status)
		return
	}
	ch <- twinResponse{status: status, version: version, body: m.Payload()} // buffered, one send per rid
}

// request publishes a twin request with the given $rid and waits for its
// response.
func (cn *mqttConn) request(ctx context.Context, topicPrefix, rid string, body []byte) (twinResponse, error) {
	ch := make(chan twinResponse, 1)
	cn.mu.Lock()
	if cn.pending == nil {
		cn.mu.Unlock()
		return twinResponse{}, cn.err()
	}
	cn.pending[rid] = ch
	cn.mu.Unlock()
	defer func() {
		cn.mu.Lock()
		if cn.pending != nil {
			delete(cn.pending, rid)
		}
		cn.mu.Unlock()
	}()
	if body == nil {
		body = []byte{}
	}
	cn.publishing.Add(1)
	var tok mqtt.Token
	started := cn.startPublish(topicPrefix+rid, body)
	var done <-chan struct{}
	acked := false
	defer func() {
		if !acked {
			cn.publishing.Add(-1)
		}
	}()
	for {
		select {
		case tok = <-started:
			started, done = nil, tok.Done()
		case r := <-ch:
			return r, nil
		case <-done:
			if err := tok.Error(); err != nil {
				return twinResponse{}, cn.publishFailed(err)
			}
			done, acked = nil, true // PUBACK received; keep waiting for the response
			cn.publishing.Add(-1)
		case <-cn.lost:
			return twinResponse{}, cn.err()
		case <-ctx.Done():
			return twinResponse{}, ctx.Err()
		}
	}
}

// publish sends one QoS 1 message and waits for its PUBACK.
func (cn *mqttConn) publish(ctx context.Context, topic string, body []byte) error {
	cn.publishing.Add(1)
	defer cn.publishing.Add(-1)
	var tok mqtt.Token
	select {
	case tok = <-cn.startPublish(topic, body):
	case <-cn.lost:
		return cn.err()
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := waitToken(ctx, tok, writeTimeout+pingTimeout, cn.lost); err != nil {
		if errors.Is(err, errConnLost) {
			return cn.err()
		}
		return cn.publishFailed(err)
	}
	return nil
}

// startPublish hands a QoS 1 publish to paho without waiting for paho to
// take it: when the connection dies under it, paho's Publish blocks for its
// write timeout (nobody reads its queue any more), and the caller must not.
// The goroutine is counted in cn.pubs, which Client.Run waits for.
func (cn *mqttConn) startPublish(topic string, body []byte) <-chan mqtt.Token {
	ch := make(chan mqtt.Token, 1)
	cn.pubs.Add(1)
	go func() {
		defer cn.pubs.Done()
		ch <- cn.client.Publish(topic, 1, false, body)
	}()
	return ch
}

// publishFailed interprets a failed publish. paho reports the end of a
// connection to publishers (ErrNotConnected) before its connection-lost
// handler runs: mark the connection lost right away, so that callers move on
// to its successor instead of retrying a dead one.
func (cn *mqttConn) publishFailed(err error) error {
	if errors.Is(err, mqtt.ErrNotConnected) {
		cn.markLost(fmt.Errorf("%w: %w", errConnLost, err))
		return cn.err()
	}
	return fmt.Errorf("failed to publish: %w", err)
}

// markLost records why the connection ended and wakes everyone waiting on it.
func (cn *mqttConn) markLost(err error) {
	cn.lostOnce.Do(func() {
		cn.mu.Lock()
		cn.lostErr = err
		cn.pending = nil
		cn.mu.Unlock()
		close(cn.lost)
	})
}

// err returns why the connection ended (errConnLost-wrapped).
func (cn *mqttConn) err() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.lostErr == nil {
		return errConnLost
	}
	return cn.lostErr
}

// idle reports whether nothing is in flight on the connection: no method
// request waiting for its handler or its answer's PUBACK, no publish waiting
// for its PUBACK. edgeHub closes a connection as soon as its successor is
// bound and fails the method calls still waiting on it (504), so a token
// renewal connects again only at such a moment (see Client.renew).
func (cn *mqttConn) idle() bool {
	return cn.calls.Load() == 0 && cn.publishing.Load() == 0
}

// waitIdle waits until the connection is idle (or gone), ctx is done or
// deadline passes; it reports whether the connection is idle or gone.
func (cn *mqttConn) waitIdle(ctx context.Context, deadline time.Time) bool {
	for !cn.idle() && cn.alive() {
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return false
		}
		// Polling keeps the counters plain atomics on the hot path; a
		// millisecond only delays the moment of the renewal.
		time.Sleep(time.Millisecond)
	}
	return true
}

// usable reports whether new requests may start on the connection.
func (cn *mqttConn) usable() bool {
	return !cn.retired.Load() && cn.alive()
}

// alive reports whether the connection has not ended yet.
func (cn *mqttConn) alive() bool {
	select {
	case <-cn.lost:
		return false
	default:
		return true
	}
}

// close disconnects (if still connected) and ends the connection. Safe to
// call more than once and after the connection was lost.
func (cn *mqttConn) close() {
	cn.markLost(fmt.Errorf("%w: closed", errConnLost))
	if cn.client != nil {
		cn.client.Disconnect(disconnectWait)
	}
}

// brokerURL returns the paho server URL for a transport, host and port.
func brokerURL(transport, host string, port int) string {
	hp := net.JoinHostPort(host, strconv.Itoa(port))
	if transport == TransportMQTTWS {
		return "wss://" + hp + "/$iothub/websocket"
	}
	return "tls://" + hp
}
