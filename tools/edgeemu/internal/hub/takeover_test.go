package hub

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
)

// TestTakeoverHandOver drives the hook the way mochi does when a persistent
// session is taken over (OnSessionEstablish, then mochi moves the
// subscriptions, then CONNACK and OnSessionEstablished) and checks the
// moment in between, which is too short to hit from outside: the new
// connection is already the live, subscribed one (a call would otherwise get
// 404), the request still queued on the old connection has moved to the new
// one (it would otherwise be lost and time out), and the old connection
// accepts nothing more.
func TestTakeoverHandOver(t *testing.T) {
	store, err := registry.Open(filepath.Join(t.TempDir(), "state.json"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Ensure(registry.Identity{DeviceID: "d", ModuleID: "m"}); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Store: store, HubHostName: "hub"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	k := &hook{h: h}
	id := registry.ID{Device: "d", Module: "m"}
	const methods = "$iothub/methods/POST/#"
	connect := packets.Packet{Connect: packets.ConnectParams{Clean: false, ClientIdentifier: "d/m"}}

	client := func() (*mqtt.Client, *conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		cl := h.srv.NewClient(a, "test", "d/m", false)
		cl.Properties.ProtocolVersion = 4
		cl.Properties.Clean = false
		c := newConn(id, cl, ConnInfo{}, time.Now().Add(time.Hour))
		h.mu.Lock()
		h.byClient[cl] = c
		h.mu.Unlock()
		return cl, c
	}

	oldCl, old := client()
	k.OnSessionEstablish(oldCl, connect)
	oldCl.State.Subscriptions.Add(methods, packets.Subscription{Filter: methods})
	h.srv.Clients.Add(oldCl)
	// A request routed to the old connection that its writer has not sent yet
	// (the writer is not running here).
	if !old.send("$iothub/methods/POST/m/?$rid=1", []byte(`{}`)) {
		t.Fatal("queueing on the old connection failed")
	}

	newCl, nw := client()
	k.OnSessionEstablish(newCl, connect)

	// mochi has not moved the subscriptions yet.
	if _, ok := newCl.State.Subscriptions.Get(methods); ok {
		t.Fatal("test setup: the new client already has the subscription")
	}
	if !h.Subscribed(id, "$iothub/methods/POST/m/?$rid=2") || !h.HasSubscription(id, methods) {
		t.Error("between the takeover and mochi's hand-over the identity is not subscribed: calls get 404")
	}
	h.mu.Lock()
	live := h.liveLocked(id)
	h.mu.Unlock()
	if live != nw {
		t.Error("the new connection is not the live one")
	}
	if n := len(nw.out); n != 1 {
		t.Errorf("%d requests moved to the new connection, want the 1 queued on the old one", n)
	} else if pk := <-nw.out; pk.TopicName != "$iothub/methods/POST/m/?$rid=1" {
		t.Errorf("moved %q", pk.TopicName)
	}
	if !oldCl.Closed() {
		t.Error("the old client was not stopped")
	}
	if old.send("$iothub/methods/POST/m/?$rid=3", nil) {
		t.Error("the retired connection still accepts requests")
	}

	// mochi moves the subscriptions, then CONNACK and OnSessionEstablished:
	// from now on the client's own state counts.
	newCl.State.Subscriptions.Add(methods, packets.Subscription{Filter: methods})
	k.OnSessionEstablished(newCl, connect)
	if nw.inherited.Load() != nil {
		t.Error("inherited filters kept after OnSessionEstablished")
	}
	newCl.State.Subscriptions.Delete(methods)
	if h.Subscribed(id, "$iothub/methods/POST/m/?$rid=4") {
		t.Error("still subscribed after unsubscribing")
	}
	newCl.Stop(nil)
	close(nw.done) // what OnDisconnect does; ends the writer
}
