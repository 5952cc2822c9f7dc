package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/certs"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/sas"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/testutil"
)

// The tests in this file check, one behaviour each, that the hub behaves as edgeHub does where
// a module can notice, each naming the upstream file (Azure/iotedge, edge-hub/core/src) it
// follows. They run the real hub on a TLS listener with real paho clients.

const (
	tHub     = "hub.example"
	tMethods = "$iothub/methods/POST/#"
	tTwinRes = "$iothub/twin/res/#"
)

var tID = registry.ID{Device: "d", Module: "m"}

type testHub struct {
	*Hub
	addr string
	tls  *tls.Config
	key  []byte
	now  atomic.Pointer[time.Time] // the hub's clock; nil: real time
}

// startHub serves a hub on 127.0.0.1 with TLS; mod adjusts its Config.
func startHub(t *testing.T, mod func(*Config)) *testHub {
	t.Helper()
	dir := t.TempDir()
	store, err := registry.Open(filepath.Join(dir, "state.json"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ident, err := store.Ensure(registry.Identity{DeviceID: tID.Device, ModuleID: tID.Module})
	if err != nil {
		t.Fatal(err)
	}
	b, err := certs.Ensure(dir, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	th := &testHub{key: ident.Key, tls: &tls.Config{RootCAs: b.CAPool, ServerName: "127.0.0.1"}}
	cfg := Config{HubHostName: tHub, Store: store, Now: func() time.Time {
		if p := th.now.Load(); p != nil {
			return *p
		}
		return time.Now()
	}}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Serve(ln, &tls.Config{Certificates: []tls.Certificate{b.Server}}); err != nil {
		t.Fatal(err)
	}
	th.Hub, th.addr = h, ln.Addr().String()
	return th
}

// client is a paho connection of the test identity that records what it receives.
type client struct {
	t    *testing.T
	c    paho.Client
	lost chan struct{}
	msgs chan paho.Message
}

func (th *testHub) dial(t *testing.T, clean bool) *client {
	t.Helper()
	cl := &client{t: t, lost: make(chan struct{}), msgs: make(chan paho.Message, 1024)}
	var once sync.Once
	o := paho.NewClientOptions().
		AddBroker("tls://" + th.addr).
		SetClientID(tID.String()).
		SetUsername(tHub + "/" + tID.String() + "/?api-version=2021-04-12").
		SetPassword(sas.New(th.key, sas.Resource(tHub, tID.Device, tID.Module), "", time.Now().Add(time.Hour))).
		SetTLSConfig(th.tls).
		SetProtocolVersion(4).
		SetCleanSession(clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { cl.msgs <- m }).
		SetConnectionLostHandler(func(paho.Client, error) { once.Do(func() { close(cl.lost) }) })
	cl.c = paho.NewClient(o)
	if tok := cl.c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.c.Disconnect(0) })
	return cl
}

func (cl *client) subscribe(filter string, qos byte) {
	cl.t.Helper()
	tok := cl.c.Subscribe(filter, qos, nil) // messages go to the default handler
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		cl.t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

// next returns the next message received, failing the test at ctx's end.
func (cl *client) next(ctx context.Context) paho.Message {
	cl.t.Helper()
	select {
	case m := <-cl.msgs:
		return m
	case <-ctx.Done():
		cl.t.Fatal("no message received")
		return nil
	}
}

// answer publishes a method response for the request m.
func (cl *client) answer(m paho.Message, status int, body string) {
	cl.t.Helper()
	_, query, _ := strings.Cut(m.Topic(), "?")
	q, _ := url.ParseQuery(query)
	tok := cl.c.Publish(fmt.Sprintf("$iothub/methods/res/%d/?$rid=%s", status, q.Get("$rid")), 1, false, body)
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		cl.t.Fatalf("answer: %v", tok.Error())
	}
}

// twinRoundTrip sends a twin GET and waits for its answer: proof the connection works.
func (cl *client) twinRoundTrip(ctx context.Context) {
	cl.t.Helper()
	tok := cl.c.Publish("$iothub/twin/GET/?$rid=t1", 1, false, "")
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		cl.t.Fatalf("twin GET: %v", tok.Error())
	}
	for {
		m := cl.next(ctx)
		if strings.HasPrefix(m.Topic(), "$iothub/twin/res/200/") {
			return
		}
	}
}

func (cl *client) waitLost(ctx context.Context) {
	cl.t.Helper()
	select {
	case <-cl.lost:
	case <-ctx.Done():
		cl.t.Fatal("the connection was not closed")
	}
}

func (cl *client) isLost() bool {
	select {
	case <-cl.lost:
		return true
	default:
		return false
	}
}

// call invokes method m in the background; the result arrives on the returned channel.
func (th *testHub) call(ctx context.Context, respTimeout time.Duration) <-chan error {
	res := make(chan error, 1)
	go func() {
		r, err := th.InvokeMethod(ctx, MethodRequest{DeviceID: tID.Device, ModuleID: tID.Module, Method: "m", ResponseTimeout: respTimeout})
		if err == nil {
			err = fmt.Errorf("status %d", r.Status)
		}
		res <- err
	}()
	return res
}

func (th *testHub) connected() bool {
	info, _ := th.Info(tID)
	return info.Connected
}

func hubCode(err error) int {
	var he *Error
	if errors.As(err, &he) {
		return he.Code
	}
	return 0
}

// gate holds bind's asynchronous part at one stage until released.
type gate struct {
	at      string
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate(at string) *gate {
	return &gate{at: at, reached: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) stage(s string) {
	if s == g.at {
		g.once.Do(func() { close(g.reached); <-g.release })
	}
}

func (g *gate) wait(ctx context.Context, t *testing.T) {
	t.Helper()
	select {
	case <-g.reached:
	case <-ctx.Done():
		t.Fatalf("takeover stage %q never reached", g.at)
	}
}

// TestTakeoverClosesOldAfterConnack follows ConnectionManager.AddDeviceConnection (edge-hub
// Microsoft.Azure.Devices.Edge.Hub.Core/ConnectionManager.cs), called from
// DeviceMessageHandler.BindDeviceProxyAsync once the ProtocolGateway has sent CONNACK: the
// second connection of a client id is accepted first, the first one is closed afterwards,
// asynchronously, and keeps working until then.
func TestTakeoverClosesOldAfterConnack(t *testing.T) {
	t.Parallel()
	g := newGate("close")
	th := startHub(t, func(c *Config) { c.takeoverStage = g.stage })
	ctx := testutil.Context(t)
	old := th.dial(t, false)
	old.subscribe(tTwinRes, 1)
	nw := th.dial(t, false) // returns once CONNACK arrived
	g.wait(ctx, t)
	if !th.connected() {
		t.Error("not connected after the new CONNACK")
	}
	// The old connection is still open after the new CONNACK and still answered.
	old.twinRoundTrip(ctx)
	if old.isLost() {
		t.Fatal("the old connection was closed before the takeover's close stage")
	}
	close(g.release)
	old.waitLost(ctx)
	if nw.isLost() {
		t.Error("the new connection was closed")
	}
	if info, _ := th.Info(tID); !info.Connected || info.Connects != 2 {
		t.Errorf("after the takeover: %+v, want connected with 2 connects", info)
	}
}

// TestPendingCallFailsAtTakeover follows DeviceMessageHandler.InvokeMethodAsync (edge-hub
// Microsoft.Azure.Devices.Edge.Hub.Core/device/DeviceMessageHandler.cs): a call waiting for the
// answer of a connection that is replaced completes as 504 when that connection's handler
// closes, long before its response timeout; it does not move to the new connection.
func TestPendingCallFailsAtTakeover(t *testing.T) {
	t.Parallel()
	th := startHub(t, nil)
	ctx := testutil.Context(t)
	old := th.dial(t, false)
	old.subscribe(tMethods, 1)
	res := th.call(ctx, time.Hour)
	old.next(ctx) // the request reached the old connection; it is never answered
	nw := th.dial(t, false)
	select {
	case err := <-res:
		if hubCode(err) != CodeGatewayTimeout {
			t.Fatalf("call pending at the takeover: %v, want 504101", err)
		}
	case <-ctx.Done():
		t.Fatal("the call pending on the replaced connection did not fail when it closed")
	}
	select {
	case m := <-nw.msgs:
		t.Errorf("the pending request was sent again on the new connection: %s", m.Topic())
	default:
	}
}

// TestAnswerOnOtherConnectionDropped follows DeviceMessageHandler.ProcessMethodResponseAsync
// (edge-hub Microsoft.Azure.Devices.Edge.Hub.Core/device/DeviceMessageHandler.cs): each
// connection has its own table of pending calls, so an answer published on the new connection
// for a request of the old one finds nothing ("No request found for method invoke response")
// and is dropped, while the old connection can still answer until it is closed.
func TestAnswerOnOtherConnectionDropped(t *testing.T) {
	t.Parallel()
	g := newGate("close")
	th := startHub(t, func(c *Config) { c.takeoverStage = g.stage })
	ctx := testutil.Context(t)
	old := th.dial(t, false)
	old.subscribe(tMethods, 1)
	res := th.call(ctx, time.Hour)
	req := old.next(ctx)
	nw := th.dial(t, false)
	g.wait(ctx, t)
	nw.subscribe(tTwinRes, 1)
	nw.answer(req, 201, `"from the new connection"`) // PUBACK: the hub has read it
	nw.twinRoundTrip(ctx)                            // and handled it: it handles in order
	old.answer(req, 202, `"from the old connection"`)
	if err := <-res; err == nil || err.Error() != "status 202" {
		t.Errorf("call answered on both connections: %v, want the old connection's 202", err)
	}
	close(g.release)
}

// TestSessionRestoredAfterTakeover follows MessagingServiceClient.BindMessagingChannel and
// SessionStateStoragePersistenceProvider (edge-hub Microsoft.Azure.Devices.Edge.Hub.Mqtt): a
// CleanSession=0 client that connects again starts with no subscriptions, and those of its
// stored session are restored asynchronously after the takeover, only with store and forward
// on (MqttModule.cs: without it SessionStatePersistenceProvider stores nothing). Meanwhile a
// method call is answered 404 at once (InvokeMethodHandler.cs).
func TestSessionRestoredAfterTakeover(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		noStoreForward  bool
		clean           bool
		wantRestoration bool
	}{
		{name: "persistent session, store and forward", wantRestoration: true},
		{name: "persistent session, no store and forward", noStoreForward: true},
		{name: "clean session", clean: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			restore, done := newGate("restore"), newGate("done")
			th := startHub(t, func(c *Config) {
				c.NoStoreAndForward = tt.noStoreForward
				c.takeoverStage = func(s string) { restore.stage(s); done.stage(s) }
			})
			close(done.release)
			ctx := testutil.Context(t)
			old := th.dial(t, tt.clean)
			old.subscribe(tMethods, 1)
			nw := th.dial(t, tt.clean)
			restore.wait(ctx, t)
			if th.Subscribed(tID, "$iothub/methods/POST/m/?$rid=1") {
				t.Error("subscribed before the session was restored")
			}
			if err := <-th.call(ctx, time.Hour); hubCode(err) != CodeDeviceNotOnline {
				t.Errorf("call before the restore: %v, want 404103 at once", err)
			}
			close(restore.release)
			done.wait(ctx, t)
			if got := th.HasSubscription(tID, tMethods); got != tt.wantRestoration {
				t.Fatalf("subscribed after the takeover = %v, want %v", got, tt.wantRestoration)
			}
			if !tt.wantRestoration {
				return
			}
			res := th.call(ctx, time.Hour)
			nw.answer(nw.next(ctx), 200, `{}`)
			if err := <-res; err == nil || err.Error() != "status 200" {
				t.Errorf("call on the restored subscription: %v", err)
			}
		})
	}
}

// TestMethodWithoutSubscription404 follows InvokeMethodHandler.InvokeMethod (edge-hub
// Microsoft.Azure.Devices.Edge.Hub.Core/InvokeMethodHandler.cs): a connected client without a
// method subscription gets a call answered 404 at once, whatever the connect timeout; a client
// that is not connected is waited for, up to the connect timeout (IoT Hub's behaviour for an
// offline device).
func TestMethodWithoutSubscription404(t *testing.T) {
	t.Parallel()
	th := startHub(t, nil)
	ctx := testutil.Context(t)
	cl := th.dial(t, true)
	cl.subscribe(tTwinRes, 1)
	_, err := th.InvokeMethod(ctx, MethodRequest{DeviceID: tID.Device, ModuleID: tID.Module, Method: "m",
		ResponseTimeout: time.Hour, ConnectTimeout: time.Hour})
	if hubCode(err) != CodeDeviceNotOnline {
		t.Fatalf("call to a connected client without a method subscription: %v, want 404103 at once", err)
	}

	cl.c.Disconnect(0)
	if err := th.Wait(ctx, func() bool { return !th.connected() }); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		r, err := th.InvokeMethod(ctx, MethodRequest{DeviceID: tID.Device, ModuleID: tID.Module, Method: "m",
			ResponseTimeout: time.Hour, ConnectTimeout: time.Hour})
		if err == nil {
			err = fmt.Errorf("status %d", r.Status)
		}
		res <- err
	}()
	again := th.dial(t, true)
	again.subscribe(tMethods, 1)
	again.answer(again.next(ctx), 200, `{}`)
	if err := <-res; err == nil || err.Error() != "status 200" {
		t.Errorf("call waiting for an offline client: %v, want its answer", err)
	}
}

// TestUnsubscribeMethods404 follows the way edgeHub processes an UNSUBSCRIBE from
// $iothub/methods/POST/#: the ProtocolGateway hands the changed session to
// SessionStatePersistenceProvider.SetAsync before it sends UNSUBACK (edge-hub
// Microsoft.Azure.Devices.Edge.Hub.Mqtt/SessionState.cs keeps IsTransient false for that, and
// SessionStatePersistenceProvider.cs → SessionStateParser.cs map the filter to
// DeviceSubscription.Methods), which goes through SubscriptionProcessorBase.ProcessSubscriptions
// to ConnectionManager.RemoveSubscription (Microsoft.Azure.Devices.Edge.Hub.Core). From the
// UNSUBACK on, InvokeMethodHandler.GetDeviceProxyWithSubscription finds no method subscription
// and a call from the cloud (connect timeout 0) is answered 404 at once
// (Microsoft.Azure.Devices.Edge.Hub.Core/InvokeMethodHandler.cs). A call delivered before is
// still the connection's: its answer completes it (DeviceMessageHandler.cs keeps its pending
// calls until the connection closes). A module renewing its token relies on both.
func TestUnsubscribeMethods404(t *testing.T) {
	t.Parallel()
	done := newGate("done")
	close(done.release)
	th := startHub(t, func(c *Config) { c.takeoverStage = done.stage })
	ctx := testutil.Context(t)
	cl := th.dial(t, false)
	cl.subscribe(tMethods, 1)
	pending := th.call(ctx, time.Hour)
	req := cl.next(ctx)
	if tok := cl.c.Unsubscribe(tMethods); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("unsubscribe: %v", tok.Error())
	}
	_, err := th.InvokeMethod(ctx, MethodRequest{DeviceID: tID.Device, ModuleID: tID.Module, Method: "m",
		ResponseTimeout: time.Hour})
	if hubCode(err) != CodeDeviceNotOnline {
		t.Fatalf("call after the UNSUBACK: %v, want 404103 at once", err)
	}
	cl.answer(req, 200, `{}`)
	if err := <-pending; err == nil || err.Error() != "status 200" {
		t.Errorf("call delivered before the unsubscription: %v, want the answer given on its connection", err)
	}
	select {
	case m := <-cl.msgs:
		t.Errorf("a request reached the unsubscribed connection: %s", m.Topic())
	default:
	}
	// The stored session forgets the filter too: a takeover does not restore it.
	th.dial(t, false)
	done.wait(ctx, t)
	if th.HasSubscription(tID, tMethods) {
		t.Error("the unsubscribed method filter was restored after a takeover")
	}
}

// TestDeliveryQoS checks that method requests go out at QoS 1, capped by the subscription's
// QoS (MQTT 3.1.1 §3.8.4; edgeHub's ProtocolGateway publishes at the QoS the client
// subscribed with, and the SDKs subscribe at 1).
func TestDeliveryQoS(t *testing.T) {
	t.Parallel()
	for _, sub := range []byte{0, 1} {
		t.Run(fmt.Sprintf("subscribed at %d", sub), func(t *testing.T) {
			t.Parallel()
			th := startHub(t, nil)
			ctx := testutil.Context(t)
			cl := th.dial(t, true)
			cl.subscribe(tMethods, sub)
			res := th.call(ctx, time.Hour)
			m := cl.next(ctx)
			if m.Qos() != sub {
				t.Errorf("method request delivered at QoS %d, want %d", m.Qos(), sub)
			}
			cl.answer(m, 200, `{}`)
			if err := <-res; err == nil || err.Error() != "status 200" {
				t.Errorf("call: %v", err)
			}
		})
	}
}

// TestTokenExpiryChecked follows ConnectionReauthenticator (edge-hub
// Microsoft.Azure.Devices.Edge.Hub.Core/ConnectionReauthenticator.cs): tokens are checked
// every reauthentication period, so a client stays connected past its token's expiry until
// the next check, which removes it.
func TestTokenExpiryChecked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		interval time.Duration
		wantDrop bool
	}{
		{name: "before the next check", interval: time.Hour},
		{name: "at the next check", interval: 50 * time.Millisecond, wantDrop: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			th := startHub(t, func(c *Config) { c.TokenCheckInterval = tt.interval })
			ctx := testutil.Context(t)
			cl := th.dial(t, true)
			cl.subscribe(tTwinRes, 1)
			later := time.Now().Add(2 * time.Hour) // the token (1 h) has expired
			th.now.Store(&later)
			if tt.wantDrop {
				cl.waitLost(ctx)
				return
			}
			cl.twinRoundTrip(ctx) // still served after the expiry
			if cl.isLost() || !th.connected() {
				t.Error("dropped at the token's expiry, before the next check")
			}
		})
	}
}
