package hub

import (
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
}

func newConn(id registry.ID, cl *mqtt.Client, info ConnInfo, expiry time.Time) *conn {
	return &conn{
		id:     id,
		cl:     cl,
		info:   info,
		expiry: expiry,
		out:    make(chan packets.Packet, outboundQueue),
		done:   make(chan struct{}),
	}
}

// writeLoop sends queued packets until the connection ends.
func (c *conn) writeLoop() {
	for {
		select {
		case pk := <-c.out:
			if err := c.cl.WritePacket(pk); err != nil {
				c.cl.Stop(err)
				return
			}
		case <-c.done:
			return
		}
	}
}

// send queues a QoS 0 publish to the client. It never blocks: a full queue disconnects the
// client. IoT Hub delivers method requests, twin responses and desired-property
// notifications at QoS 0 to a client subscribed at QoS 0 and, we assume, the same to one
// subscribed at QoS 1; QoS 0 keeps the emulator free of redelivery state.
func (c *conn) send(topic string, payload []byte) bool {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     payload,
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

// subscribed reports whether one of the client's subscriptions matches topic.
func (c *conn) subscribed(topic string) bool {
	for filter := range c.cl.State.Subscriptions.GetAll() {
		if topicMatch(filter, topic) {
			return true
		}
	}
	return false
}
