package emulator_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

// TestTakeoverLosesNoCall replaces a persistent-session connection with a new
// one of the same identity again and again (what a device does to renew its
// SAS token without a gap) while method calls keep coming: no call may be
// answered 404 (no subscriber) or time out (lost in the hand-over). The
// device side quiesces as the module does: before a hand-over it waits for
// the PUBACKs of its answers on the old connection and publishes nothing more
// there; answers go out on the newest connection.
func TestTakeoverLosesNoCall(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{Logger: slog.New(slog.DiscardHandler)}) // thousands of calls
	ctx := testContext(t, 2*time.Minute)
	cr := newCreds(t, e, testDevice, testModule)

	// cur is the connection answers go out on; nil during a hand-over.
	var mu sync.Mutex
	var cur paho.Client
	changed := make(chan struct{})
	setCur := func(c paho.Client) {
		mu.Lock()
		cur = c
		close(changed)
		changed = make(chan struct{})
		mu.Unlock()
	}
	var publishing sync.WaitGroup // answers being written; a hand-over waits for them
	answer := func(topic string, payload []byte) {
		for {
			mu.Lock()
			c, ch := cur, changed
			if c != nil {
				publishing.Add(1)
			}
			mu.Unlock()
			if c != nil {
				// QoS 1: the PUBACK says the hub has read it, so the old connection
				// holds no unread input when it is closed (that would reset it, and
				// a reset destroys requests not yet read on this side).
				c.Publish(topic, 1, false, payload).Wait()
				publishing.Done()
				return
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}
	handler := func(_ paho.Client, m paho.Message) {
		rest, ok := strings.CutPrefix(m.Topic(), "$iothub/methods/POST/")
		if !ok {
			return
		}
		_, query, _ := strings.Cut(rest, "/?")
		q, _ := url.ParseQuery(query)
		payload := append([]byte(nil), m.Payload()...)
		go answer("$iothub/methods/res/200/?$rid="+q.Get("$rid"), payload)
	}
	dialPersistent := func() paho.Client {
		o := paho.NewClientOptions().
			AddBroker("tls://" + e.MQTTAddr()).
			SetClientID(cr.clientID).
			SetUsername(cr.username).
			SetPassword(cr.password).
			SetTLSConfig(e.TLSConfig(e.HubHostName())).
			SetProtocolVersion(4).
			SetCleanSession(false).
			SetAutoReconnect(false).
			SetConnectRetry(false).
			SetOrderMatters(false).
			SetKeepAlive(30 * time.Second).
			SetDefaultPublishHandler(handler) // requests on an inherited subscription
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		return c
	}

	first := dialPersistent()
	if tok := first.Subscribe("$iothub/methods/POST/#", 0, handler); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	setCur(first)
	clients := []paho.Client{first}
	t.Cleanup(func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	})

	var calls, notFound, timedOut, other atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf(`{"caller":%d,"n":%d}`, i, n)
				status, resp, err := e.InvokeMethod(ctx, testDevice, testModule, "m", []byte(body), 5*time.Second)
				calls.Add(1)
				var he *emulator.HubError
				switch {
				case errors.As(err, &he) && he.Status == 404:
					notFound.Add(1)
				case errors.As(err, &he) && he.Status == 504:
					timedOut.Add(1)
				case err != nil || status != 200 || string(resp) != body:
					if other.Add(1) <= 3 {
						t.Errorf("call: %d %s %v", status, resp, err)
					}
				}
			}
		})
	}

	const takeovers = 40
	for range takeovers {
		time.Sleep(25 * time.Millisecond)
		setCur(nil) // quiesce: nothing goes out on the old connection
		publishing.Wait()
		next := dialPersistent()
		clients = append(clients, next)
		setCur(next)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d calls across %d takeovers: %d answered 404, %d timed out", calls.Load(), takeovers, notFound.Load(), timedOut.Load())
	if notFound.Load() != 0 || timedOut.Load() != 0 {
		t.Errorf("%d calls answered 404 and %d timed out during takeovers, want none", notFound.Load(), timedOut.Load())
	}
	if got := e.Connects(testDevice, testModule); got != takeovers+1 {
		t.Errorf("Connects = %d, want %d", got, takeovers+1)
	}
}
