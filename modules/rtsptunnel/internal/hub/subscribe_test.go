package hub

import (
	"crypto/tls"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/identity"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

// refuseFirstSubscription is a broker hook that accepts any client and
// refuses its first subscription to the method topic (SUBACK 0x80), which
// the emulator never does.
type refuseFirstSubscription struct {
	mqtt.HookBase
	methodSubs atomic.Int32
	sessions   atomic.Int32
}

func (h *refuseFirstSubscription) ID() string { return "refuse-first-subscription" }

func (h *refuseFirstSubscription) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnSessionEstablished
}

func (h *refuseFirstSubscription) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool {
	return true
}

func (h *refuseFirstSubscription) OnACLCheck(_ *mqtt.Client, topic string, write bool) bool {
	return write || topic != filterMethods || h.methodSubs.Add(1) > 1
}

func (h *refuseFirstSubscription) OnSessionEstablished(*mqtt.Client, packets.Packet) {
	h.sessions.Add(1)
}

// TestSubscriptionRefused is trap 7: a refused subscription fails the
// connection, and the client builds a new one that subscribes again.
func TestSubscriptionRefused(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 30*time.Second)
	ca := testutil.NewCA(t, "hub test CA")
	cert := ca.Leaf(t, "127.0.0.1")
	addr := testutil.FreeAddr(t)

	srv := mqtt.New(&mqtt.Options{InlineClient: false, Logger: testutil.TLogger(t, "mochi")})
	hook := &refuseFirstSubscription{}
	if err := srv.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: addr,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	caFile := ca.WriteFile(t, "ca.pem")
	id, err := identity.Load(ctx, func(k string) string {
		switch k {
		case identity.EnvConnectionString:
			return "HostName=127.0.0.1;DeviceId=dev;SharedAccessKey=" + testKey
		case identity.EnvHubCAFile:
			return caFile
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	c, err := New(Options{Identity: id, Port: mustAtoi(t, port), Logger: testutil.TLogger(t, "hub")})
	if err != nil {
		t.Fatal(err)
	}
	c.retryMin, c.retryMax = 20*time.Millisecond, 100*time.Millisecond
	testutil.StartRun(t, ctx, 30*time.Second, c.Run) // handlers 2 s, a publish paho holds 10 s

	testutil.WaitFor(t, ctx, "the client to subscribe to methods", func() bool {
		cl, ok := srv.Clients.Get("dev")
		if !ok || cl.Closed() {
			return false
		}
		_, subscribed := cl.State.Subscriptions.Get(filterMethods)
		return subscribed
	})
	if n := hook.sessions.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the refused one and its replacement)", n)
	}
	if testutil.Logged(c.log, "failed to connect") != 1 {
		t.Errorf("the refused subscription was not logged as a failed connect")
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
