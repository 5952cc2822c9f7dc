package hub

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/identity"
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
	ctx := testContext(t, 30*time.Second)
	caPEM, cert := serverCert(t, "127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	srv := mqtt.New(&mqtt.Options{InlineClient: false, Logger: testLogger(t, "mochi")})
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

	caFile := writeFile(t, "ca.pem", caPEM)
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
	c, err := New(Options{Identity: id, Port: mustAtoi(t, port), Logger: testLogger(t, "hub")})
	if err != nil {
		t.Fatal(err)
	}
	c.retryMin, c.retryMax = 20*time.Millisecond, 100*time.Millisecond
	startRun(t, ctx, c)

	for {
		if cl, ok := srv.Clients.Get("dev"); ok && !cl.Closed() {
			if _, subscribed := cl.State.Subscriptions.Get(filterMethods); subscribed {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("the client never subscribed to methods")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if n := hook.sessions.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the refused one and its replacement)", n)
	}
	if logged(c.log, "failed to connect") != 1 {
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

// serverCert returns a throwaway CA (PEM) and a server certificate it signed
// for the IP address host.
func serverCert(t *testing.T, host string) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hub test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host},
		IPAddresses: []net.IP{net.ParseIP(host)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
