package hub

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
)

// conn is one authenticated MQTT connection of an identity: edgeHub's DeviceConnection, with
// its own subscriptions and its own pending method calls (edge-hub
// Microsoft.Azure.Devices.Edge.Hub.Core/ConnectionManager.cs, class DeviceConnection;
// device/DeviceMessageHandler.cs, methodCallTaskCompletionSources).
type conn struct {
	id     registry.ID  // static
	cl     *mqtt.Client // static
	info   ConnInfo     // static after authentication (Connects and LastActivity live in Hub.stats)
	expiry time.Time    // static: when the token (clamped) expires
	clean  bool         // static: the client asked for a clean session
	seq    uint64       // static: order of authentication, so a late bind never undoes a newer one

	// out carries hub → device publishes to the writer goroutine, which owns the writes so
	// a client that stops reading blocks only itself. Closed never; done ends the writer.
	out  chan packets.Packet
	done chan struct{} // closed by the OnDisconnect hook

	mu    sync.Mutex
	subs  map[string]byte               // guarded by mu: filter → granted QoS
	calls map[string]chan<- methodReply // guarded by mu: method calls sent here, by $rid; nil once closed
}

func newConn(id registry.ID, cl *mqtt.Client, info ConnInfo, expiry time.Time, clean bool, seq uint64) *conn {
	return &conn{
		id:     id,
		cl:     cl,
		info:   info,
		expiry: expiry,
		clean:  clean,
		seq:    seq,
		out:    make(chan packets.Packet, outboundQueue),
		done:   make(chan struct{}),
		subs:   map[string]byte{},
		calls:  map[string]chan<- methodReply{},
	}
}

// writeLoop sends queued packets until the connection ends. A publish at QoS 1 gets the next
// packet id; it is not tracked or redelivered (the connection ends before a redelivery could
// matter), and mochi ignores the PUBACK of an id it does not track. The ids are not taken from
// mochi's in-flight table on purpose: mochi checks the client's own SUBSCRIBE ids against that
// table and refuses a clash (0x91), although MQTT keeps the two directions' ids apart.
func (c *conn) writeLoop() {
	var pid uint16
	for {
		select {
		case pk := <-c.out:
			if pk.FixedHeader.Qos > 0 {
				if pid++; pid == 0 {
					pid = 1
				}
				pk.PacketID = pid
			}
			if err := c.cl.WritePacket(pk); err != nil {
				c.cl.Stop(err)
				return
			}
		case <-c.done:
			return
		}
	}
}

// send queues a publish to the client at the QoS edgeHub uses, 1, capped by the QoS of the
// client's matching subscription (MQTT 3.1.1 §3.8.4; edgeHub delivers through the
// ProtocolGateway at the subscription's QoS). It never blocks: a full queue disconnects the
// client. It fails once the connection has ended.
func (c *conn) send(topic string, payload []byte) bool {
	qos, ok := c.subscriptionQoS(topic)
	if !ok {
		return false
	}
	return c.queue(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: min(qos, 1)},
		TopicName:   topic,
		Payload:     payload,
	})
}

// queue is send for a ready packet.
func (c *conn) queue(pk packets.Packet) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.out <- pk:
		return true
	case <-c.done:
		return false
	default:
		c.cl.Stop(errQueueFull)
		return false
	}
}

// subscriptionQoS returns the highest QoS among the subscriptions matching topic.
func (c *conn) subscriptionQoS(topic string) (qos byte, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for filter, q := range c.subs {
		if topicMatch(filter, topic) {
			qos, ok = max(qos, q), true
		}
	}
	return qos, ok
}

// subscribed reports whether one of the connection's subscriptions matches topic.
func (c *conn) subscribed(topic string) bool {
	_, ok := c.subscriptionQoS(topic)
	return ok
}

// hasFilter reports whether the connection has exactly this filter.
func (c *conn) hasFilter(filter string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.subs[filter]
	return ok
}

// subscribe records granted filters; a filter already present keeps the new QoS.
func (c *conn) subscribe(filters map[string]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for f, q := range filters {
		c.subs[f] = q
	}
}

// restore adds a persistent session's filters the client has not subscribed to itself since.
func (c *conn) restore(filters map[string]byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for f, q := range filters {
		if _, ok := c.subs[f]; !ok {
			c.subs[f] = q
			n++
		}
	}
	return n
}

func (c *conn) unsubscribe(filters []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range filters {
		delete(c.subs, f)
	}
}

// addCall registers a method call sent on this connection; false once it has closed.
func (c *conn) addCall(rid string, ch chan<- methodReply) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		return false
	}
	c.calls[rid] = ch
	return true
}

// takeCall removes and returns the call waiting for rid's answer on this connection.
func (c *conn) takeCall(rid string) (chan<- methodReply, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.calls[rid]
	delete(c.calls, rid)
	return ch, ok
}

// closeCalls completes every call still waiting on this connection as a gateway timeout at
// once, as edgeHub does when a DeviceMessageHandler closes: its InvokeMethodAsync waits with
// Task.Delay(ResponseTimeout, handlerClosed.Token), and the cancelled delay is taken for the
// timeout (edge-hub Microsoft.Azure.Devices.Edge.Hub.Core/device/DeviceMessageHandler.cs).
// It returns how many calls it completed.
func (c *conn) closeCalls() int {
	c.mu.Lock()
	calls := c.calls
	c.calls = nil
	c.mu.Unlock()
	for _, ch := range calls {
		select {
		case ch <- methodReply{closed: true}:
		default:
		}
	}
	return len(calls)
}

// closed reports whether the connection has ended.
func (c *conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return c.cl.Closed()
	}
}
