package hub

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
)

// conn is one authenticated MQTT connection of an identity.
type conn struct {
	id     registry.ID  // static
	cl     *mqtt.Client // static
	info   ConnInfo     // static after authentication (Connects and LastActivity live in Hub.stats)
	expiry time.Time    // static: when the token (clamped) expires

	// out carries hub → device publishes to the writer goroutine, which owns the writes so
	// a client that stops reading blocks only itself. Closed never; done ends the writer.
	out  chan packets.Packet
	done chan struct{} // closed by the OnDisconnect hook

	timer *time.Timer // token expiry; set in OnSessionEstablished, stopped in OnDisconnect

	// qmu orders pushes into out against retire, so that no packet is queued on a
	// connection after its queue was handed to its successor.
	qmu     sync.Mutex
	retired bool // guarded by qmu

	retiredCh  chan struct{} // closed by retire: the writer stops
	writerDone chan struct{} // closed when writeLoop returns
	started    atomic.Bool   // writeLoop was started

	// inherited holds the subscription filters of the session this connection takes over
	// (persistent sessions), from OnSessionEstablish until OnSessionEstablished, when mochi
	// has moved them into the client's own state. It lets the connection count as
	// subscribed from the moment it becomes the identity's live one.
	inherited atomic.Pointer[[]string]
}

func newConn(id registry.ID, cl *mqtt.Client, info ConnInfo, expiry time.Time) *conn {
	return &conn{
		id:         id,
		cl:         cl,
		info:       info,
		expiry:     expiry,
		out:        make(chan packets.Packet, outboundQueue),
		done:       make(chan struct{}),
		retiredCh:  make(chan struct{}),
		writerDone: make(chan struct{}),
	}
}

// writeLoop sends queued packets until the connection ends or is retired.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	for {
		select {
		case <-c.retiredCh: // before taking another packet
			return
		default:
		}
		select {
		case pk := <-c.out:
			if err := c.cl.WritePacket(pk); err != nil {
				c.cl.Stop(err)
				return
			}
		case <-c.done:
			return
		case <-c.retiredCh:
			return
		}
	}
}

// retire ends a connection that another one of the same identity takes over: later sends
// fail, the writer stops after the packet it is writing (waiting at most wait for it), and
// the packets still queued are returned, in order, for the successor. The caller then stops
// the client.
func (c *conn) retire(wait time.Duration) []packets.Packet {
	c.qmu.Lock()
	if c.retired {
		c.qmu.Unlock()
		return nil
	}
	c.retired = true
	c.qmu.Unlock()
	close(c.retiredCh)
	if c.started.Load() {
		t := time.NewTimer(wait)
		select {
		case <-c.writerDone:
		case <-t.C: // blocked on a client that does not read; Stop will end it
		}
		t.Stop()
	}
	var left []packets.Packet
	for {
		select {
		case pk := <-c.out:
			left = append(left, pk)
		default:
			return left
		}
	}
}

// send queues a QoS 0 publish to the client. It never blocks: a full queue disconnects the
// client. IoT Hub delivers method requests, twin responses and desired-property
// notifications at QoS 0 to a client subscribed at QoS 0 and, we assume, the same to one
// subscribed at QoS 1; QoS 0 keeps the emulator free of redelivery state.
func (c *conn) send(topic string, payload []byte) bool {
	return c.queue(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     payload,
	})
}

// queue is send for a ready packet.
func (c *conn) queue(pk packets.Packet) bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.retired {
		return false
	}
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

// subscribed reports whether one of the client's subscriptions (or those it is inheriting)
// matches topic.
func (c *conn) subscribed(topic string) bool {
	for filter := range c.cl.State.Subscriptions.GetAll() {
		if topicMatch(filter, topic) {
			return true
		}
	}
	if inh := c.inherited.Load(); inh != nil {
		for _, filter := range *inh {
			if topicMatch(filter, topic) {
				return true
			}
		}
	}
	return false
}

// hasFilter reports whether the client has (or is inheriting) exactly this filter.
func (c *conn) hasFilter(filter string) bool {
	if _, ok := c.cl.State.Subscriptions.Get(filter); ok {
		return true
	}
	if inh := c.inherited.Load(); inh != nil {
		for _, f := range *inh {
			if f == filter {
				return true
			}
		}
	}
	return false
}

// handedOver reports whether a packet queued for a retired connection goes to its
// successor: method requests and desired-property pushes do; twin responses answer a
// request of the old connection and are dropped (the device repeats the request).
func handedOver(pk packets.Packet) bool {
	return !strings.HasPrefix(pk.TopicName, "$iothub/twin/res/")
}
