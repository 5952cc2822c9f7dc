package hub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/sas"
)

// hook carries IoT Hub's semantics into mochi. mochi calls it from each client's read
// goroutine (and, for OnSubscribed etc., synchronously within packet processing).
type hook struct {
	mqtt.HookBase
	h *Hub
}

func (k *hook) ID() string { return "iothub" }

func (k *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablish,
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnPublish, mqtt.OnPublished, mqtt.OnPacketRead,
	}, []byte{b})
}

// OnConnect refuses MQTT 5: IoT Hub speaks 3.1.1 (3.1 is refused by mochi's minimum version).
func (k *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if pk.ProtocolVersion == 5 {
		_ = k.h.srv.SendConnack(cl, packets.ErrUnsupportedProtocolVersion, false, nil)
		k.h.log.Info("connection refused", "client_id", pk.Connect.ClientIdentifier, "reason", "MQTT 5 is not supported")
		return packets.ErrUnsupportedProtocolVersion
	}
	return nil
}

// OnConnectAuthenticate checks the client id, username and SAS token as IoT Hub does. A
// refusal makes mochi answer CONNACK 0x05 (not authorized), the code IoT Hub sends for a bad
// SAS token (e.g. the CONNACK trace in Azure/azure-iot-sdk-c#373).
func (k *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	h := k.h
	c, err := h.authenticate(cl, pk)
	if err != nil {
		h.log.Info("connection refused",
			"client_id", pk.Connect.ClientIdentifier,
			"username", pk.Connect.Username,
			"remote", cl.Net.Remote,
			"reason", err.Error())
		return false
	}
	h.mu.Lock()
	h.byClient[cl] = c
	h.mu.Unlock()
	return true
}

func (h *Hub) authenticate(cl *mqtt.Client, pk packets.Packet) (*conn, error) {
	now := h.cfg.Now()
	u, err := parseUsername(string(pk.Connect.Username))
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(u.hub, h.cfg.HubHostName) {
		return nil, fmt.Errorf("username names hub %q, this hub is %q", u.hub, h.cfg.HubHostName)
	}
	id := registry.ID{Device: u.device, Module: u.module}
	if pk.Connect.ClientIdentifier != id.String() {
		return nil, fmt.Errorf("client id %q does not match the username's identity %q", pk.Connect.ClientIdentifier, id)
	}
	ident, ok := h.cfg.Store.Lookup(id.Device, id.Module)
	if !ok {
		return nil, fmt.Errorf("identity %s is not registered", id)
	}
	if !pk.Connect.PasswordFlag || len(pk.Connect.Password) == 0 {
		return nil, errors.New("no password (SAS token)")
	}
	tok, err := sas.Parse(string(pk.Connect.Password))
	if err != nil {
		return nil, err
	}
	if tok.KeyName != "" {
		// Hub-level policies with DeviceConnect are not emulated: only the service policy exists.
		return nil, fmt.Errorf("token is signed with policy %q; only device and module keys are accepted", tok.KeyName)
	}
	want := sas.Resource(h.cfg.HubHostName, id.Device, id.Module)
	if !sameResource(tok.Resource, want) {
		return nil, fmt.Errorf("token resource %q is not %q", tok.Resource, want)
	}
	if !tok.Verify(ident.Key) {
		return nil, errors.New("token signature does not match the identity's key")
	}
	if !tok.Expiry.After(now) {
		return nil, fmt.Errorf("token expired at %s", tok.Expiry.UTC().Format(time.RFC3339))
	}
	expiry := tok.Expiry
	if m := h.cfg.MaxTokenLifetime; m > 0 && now.Add(m).Before(expiry) {
		expiry = now.Add(m)
	}
	info := ConnInfo{
		Transport:           cl.Net.Listener,
		Remote:              cl.Net.Remote,
		Username:            string(pk.Connect.Username),
		APIVersion:          u.apiVersion,
		ModelID:             u.modelID,
		NonstandardUsername: u.nonstandard,
		ConnectedAt:         now,
		TokenExpiry:         expiry,
	}
	return newConn(id, cl, info, expiry), nil
}

// sameResource compares SAS resources: the host name case-insensitively (DNS), the path exactly.
func sameResource(got, want string) bool {
	gh, gp, _ := strings.Cut(got, "/")
	wh, wp, _ := strings.Cut(want, "/")
	return strings.EqualFold(gh, wh) && gp == wp
}

// OnSessionEstablish runs after authentication, before CONNACK. It makes this connection the
// identity's live one, then ends the identity's previous connection before mochi takes its
// session over (mochi would send that client a DISCONNECT packet, which MQTT 3.1.1 servers do
// not send; IoT Hub just closes the connection), so that by the time the client sees CONNACK
// the emulator reports it connected.
//
// A takeover leaves no gap in which calls fail: the switch of the live connection is one step
// under h.mu; a persistent session's subscriptions count for the new connection from that step
// on (mochi moves them only after this hook); calls routed from then on wait in the new
// connection's queue until CONNACK; and the old connection's writer is stopped after the packet
// it is writing, its queued method requests and desired pushes moving to the new connection.
func (k *hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	h := k.h
	prev, ok := h.srv.Clients.Get(cl.ID)
	if !ok || prev == cl {
		prev = nil
	}
	h.mu.Lock()
	c := h.byClient[cl]
	if c == nil {
		h.mu.Unlock()
		if prev != nil && !prev.Closed() {
			prev.Stop(errTakenOver)
		}
		return
	}
	var old *conn
	if prev != nil {
		old = h.byClient[prev]
		// mochi carries the subscriptions over unless either side asked for a clean session.
		if !pk.Connect.Clean && !prev.Properties.Clean {
			var filters []string
			for f := range prev.State.Subscriptions.GetAll() {
				filters = append(filters, f)
			}
			c.inherited.Store(&filters)
		}
	}
	h.live[c.id] = c
	st := h.stats[c.id]
	if st == nil {
		st = &ConnInfo{}
		h.stats[c.id] = st
	}
	connects := st.Connects + 1
	*st = c.info
	st.Connects = connects
	st.LastActivity = c.info.ConnectedAt
	c.timer = time.AfterFunc(c.expiry.Sub(h.cfg.Now()), func() {
		h.log.Info("token expired, disconnecting", "device", c.id.Device, "module", c.id.Module,
			"expiry", c.expiry.UTC().Format(time.RFC3339))
		cl.Stop(errTokenExpired)
	})
	h.notifyLocked()
	h.mu.Unlock()

	if prev == nil || prev.Closed() {
		return
	}
	var left []packets.Packet
	if old != nil {
		left = old.retire(retireWait)
	}
	prev.Stop(errTakenOver)
	moved := 0
	for _, p := range left {
		if handedOver(p) && c.queue(p) {
			moved++
		}
	}
	if moved > 0 {
		h.log.Debug("queued messages handed to the new connection", "device", c.id.Device, "module", c.id.Module, "messages", moved)
	}
}

// retireWait bounds how long a takeover waits for the old connection's writer to finish the
// packet it is writing.
const retireWait = 500 * time.Millisecond

// OnSessionEstablished runs after CONNACK: only now may the hub send the client anything, so
// the writer starts here (messages queued since OnSessionEstablish wait in the queue).
func (k *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h := k.h
	h.mu.Lock()
	c := h.byClient[cl]
	if c == nil {
		h.mu.Unlock()
		return
	}
	connects := h.stats[c.id].Connects
	c.inherited.Store(nil) // mochi has moved the inherited subscriptions into cl.State by now
	c.started.Store(true)
	h.wg.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.wg.Done()
		c.writeLoop()
	}()
	h.log.Info("client connected",
		"device", c.id.Device, "module", c.id.Module,
		"model_id", c.info.ModelID, "api_version", c.info.APIVersion,
		"nonstandard_username", c.info.NonstandardUsername,
		"transport", c.info.Transport, "remote", c.info.Remote,
		"clean_session", cl.Properties.Clean, "keepalive", cl.State.Keepalive,
		"token_expiry", c.expiry.UTC().Format(time.RFC3339), "connects", connects)
}

// OnDisconnect retires the connection.
func (k *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	h := k.h
	h.mu.Lock()
	c := h.byClient[cl]
	if c == nil {
		h.mu.Unlock()
		return
	}
	delete(h.byClient, cl)
	if h.live[c.id] == c {
		delete(h.live, c.id)
		if st := h.stats[c.id]; st != nil {
			st.LastActivity = h.cfg.Now()
		}
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	close(c.done)
	h.notifyLocked()
	h.mu.Unlock()

	reason := "connection closed by the client"
	switch cause := cl.StopCause(); {
	case errors.Is(cause, packets.CodeDisconnect):
		reason = "client sent DISCONNECT"
	case cause != nil:
		reason = cause.Error()
	case err != nil && !errors.Is(err, io.EOF):
		reason = err.Error()
	}
	h.log.Info("client disconnected", "device", c.id.Device, "module", c.id.Module,
		"transport", c.info.Transport, "reason", reason)
}

// OnACLCheck enforces IoT Hub's topic rules. A forbidden subscription gets SUBACK 0x80; a
// forbidden publish closes the connection, as IoT Hub does.
func (k *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	h := k.h
	c := h.conn(cl)
	if c == nil {
		return false
	}
	if !write {
		return subscribeAllowed(c.id, topic)
	}
	if classifyPublish(c.id, topic) != pubForbidden {
		return true
	}
	h.log.Warn("publish refused, disconnecting", "device", c.id.Device, "module", c.id.Module, "topic", topic)
	cl.Stop(errForbidden)
	return false
}

func (h *Hub) conn(cl *mqtt.Client) *conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byClient[cl]
}

// OnSubscribed logs the outcome and wakes waiters.
func (k *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	h := k.h
	c := h.conn(cl)
	if c == nil {
		return
	}
	for i, f := range pk.Filters {
		granted := i < len(codes) && codes[i] < 0x80
		lvl := slog.LevelInfo
		if !granted {
			lvl = slog.LevelWarn
		}
		h.log.Log(h.ctx, lvl, "subscribe", "device", c.id.Device, "module", c.id.Module,
			"filter", f.Filter, "qos", f.Qos, "granted", granted)
	}
	h.notify()
}

// OnUnsubscribed wakes waiters (method calls check subscriptions).
func (k *hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	h := k.h
	c := h.conn(cl)
	if c == nil {
		return
	}
	for _, f := range pk.Filters {
		h.log.Info("unsubscribe", "device", c.id.Device, "module", c.id.Module, "filter", f.Filter)
	}
	h.notify()
}

// OnPacketRead closes the connection of a client publishing at QoS 2, as IoT Hub does (mochi
// would downgrade it to QoS 1 before any later hook sees it).
func (k *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos == 2 {
		if c := k.h.conn(cl); c != nil {
			k.h.log.Warn("QoS 2 publish refused, disconnecting", "device", c.id.Device, "module", c.id.Module, "topic", pk.TopicName)
		}
		cl.Stop(errQoS2)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// OnPublish stops mochi from routing: clients never receive each other's messages.
func (k *hook) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	return pk, packets.CodeSuccessIgnore
}

// OnPublished handles a device's message (after mochi acknowledged a QoS 1 publish).
func (k *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	h := k.h
	c := h.conn(cl)
	if c == nil {
		return
	}
	h.touch(c.id)
	payload := bytes.Clone(pk.Payload)
	switch classifyPublish(c.id, pk.TopicName) {
	case pubMethodResponse:
		h.methodResponse(c, pk.TopicName, payload)
	case pubTwinGet:
		h.twinGet(c, pk.TopicName)
	case pubTwinReported:
		h.twinReported(c, pk.TopicName, payload)
	case pubTelemetry:
		h.log.Info("telemetry", "device", c.id.Device, "module", c.id.Module, "topic", pk.TopicName, "bytes", len(payload))
	}
}

func (h *Hub) touch(id registry.ID) {
	h.mu.Lock()
	if st := h.stats[id]; st != nil {
		st.LastActivity = h.cfg.Now()
	}
	h.mu.Unlock()
}
