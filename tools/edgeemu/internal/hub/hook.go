package hub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strconv"
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
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnPublish, mqtt.OnPublished, mqtt.OnPacketRead,
	}, []byte{b})
}

// OnConnect refuses MQTT 5: IoT Hub speaks 3.1.1 (3.1 is refused by mochi's minimum version).
//
// It also gives every connection its own mochi client id, so that mochi never takes a
// session over by itself: mochi would close the old connection before CONNACK and move the
// subscriptions at once, where edgeHub closes it after CONNACK and restores the subscriptions
// later (see bind). The emulator keeps persistent sessions itself (Hub.sessions).
func (k *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if pk.ProtocolVersion == 5 {
		_ = k.h.srv.SendConnack(cl, packets.ErrUnsupportedProtocolVersion, false, nil)
		k.h.log.Info("connection refused", "client_id", pk.Connect.ClientIdentifier, "reason", "MQTT 5 is not supported")
		return packets.ErrUnsupportedProtocolVersion
	}
	cl.ID = pk.Connect.ClientIdentifier + "#" + strconv.FormatUint(k.h.connSeq.Add(1), 10)
	// mochi forgets a clean session's client when it disconnects; the session that matters
	// (subscriptions) is kept by the hub.
	cl.Properties.Clean = true
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
	return newConn(id, cl, info, expiry, pk.Connect.Clean, h.connSeq.Add(1)), nil
}

// sameResource compares SAS resources: the host name case-insensitively (DNS), the path exactly.
func sameResource(got, want string) bool {
	gh, gp, _ := strings.Cut(got, "/")
	wh, wp, _ := strings.Cut(want, "/")
	return strings.EqualFold(gh, wh) && gp == wp
}

// OnSessionEstablished runs after CONNACK, where edgeHub binds the new connection
// (edge-hub Microsoft.Azure.Devices.Edge.Hub.Mqtt/MessagingServiceClient.cs,
// BindMessagingChannel, after the ProtocolGateway's CompleteConnect): see bind.
func (k *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h := k.h
	h.mu.Lock()
	c := h.byClient[cl]
	if c == nil || h.closing {
		h.mu.Unlock()
		return
	}
	h.wg.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.wg.Done()
		c.writeLoop()
	}()
	h.bind(c)
}

// bind makes c its identity's live connection, as edgeHub's
// DeviceMessageHandler.BindDeviceProxyAsync → ConnectionManager.AddDeviceConnection does
// (edge-hub Microsoft.Azure.Devices.Edge.Hub.Core/device/DeviceMessageHandler.cs and
// ConnectionManager.cs): the new DeviceConnection starts with no subscriptions and replaces
// the old one at once; the old one is closed afterwards, asynchronously (its pending method
// calls complete as 504 then), and only after that are a persistent session's subscriptions
// restored from the session store, and only with store and forward on (the initWhenBound
// action of MessagingServiceClient.BindMessagingChannel; SessionStatePersistenceProvider.cs
// stores nothing without store and forward, MqttModule.cs). Between the switch and the restore
// the identity is connected without subscriptions: a method call then gets 404 at once.
func (h *Hub) bind(c *conn) {
	h.mu.Lock()
	if c.closed() {
		h.mu.Unlock()
		return
	}
	prev := h.live[c.id]
	if prev != nil && prev.seq > c.seq {
		// A newer connection of the identity is bound already.
		h.mu.Unlock()
		c.cl.Stop(errTakenOver)
		return
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
	var restore map[string]byte
	switch {
	case c.clean:
		delete(h.sessions, c.id) // a clean session discards the stored one
	case !h.cfg.NoStoreAndForward:
		restore = maps.Clone(h.sessions[c.id])
	}
	h.notifyLocked()
	h.mu.Unlock()

	h.log.Info("client connected",
		"device", c.id.Device, "module", c.id.Module,
		"model_id", c.info.ModelID, "api_version", c.info.APIVersion,
		"nonstandard_username", c.info.NonstandardUsername,
		"transport", c.info.Transport, "remote", c.info.Remote,
		"clean_session", c.clean, "keepalive", c.cl.State.Keepalive,
		"token_expiry", c.expiry.UTC().Format(time.RFC3339), "connects", connects)

	if (prev == nil || prev == c) && len(restore) == 0 {
		return
	}
	h.wg.Add(1)
	stage := func(string) {}
	if h.cfg.takeoverStage != nil {
		stage = h.cfg.takeoverStage
	}
	go func() {
		defer h.wg.Done()
		defer stage("done")
		stage("close")
		if prev != nil && prev != c {
			prev.cl.Stop(errTakenOver)
			if n := prev.closeCalls(); n > 0 {
				h.log.Info("method calls pending on the replaced connection answered 504",
					"device", c.id.Device, "module", c.id.Module, "calls", n)
			}
		}
		stage("restore")
		if len(restore) > 0 && !c.closed() {
			n := c.restore(restore)
			h.log.Debug("persistent session subscriptions restored", "device", c.id.Device, "module", c.id.Module, "filters", n)
			h.notify()
		}
	}()
}

// OnDisconnect retires the connection: it stops being the live one, and the method calls
// still waiting for its answers complete as 504 at once (see closeCalls).
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
	close(c.done)
	h.notifyLocked()
	h.mu.Unlock()
	c.closeCalls()

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

// updateSession records a persistent session's subscription changes in the session store
// (edgeHub's SessionStateStoragePersistenceProvider.SetAsync).
func (h *Hub) updateSession(c *conn, added map[string]byte, removed []string) {
	if c.clean {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sessions[c.id]
	if s == nil {
		s = map[string]byte{}
		h.sessions[c.id] = s
	}
	maps.Copy(s, added)
	for _, f := range removed {
		delete(s, f)
	}
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
	grantedQoS := map[string]byte{}
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] < 0x80 {
			grantedQoS[f.Filter] = codes[i]
		}
	}
	c.subscribe(grantedQoS)
	h.updateSession(c, grantedQoS, nil)
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
	var filters []string
	for _, f := range pk.Filters {
		filters = append(filters, f.Filter)
	}
	c.unsubscribe(filters)
	h.updateSession(c, nil, filters)
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
