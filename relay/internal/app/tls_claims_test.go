package app

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/config"
)

// tls11Handshake dials addr as a client that speaks only TLS 1.0 and 1.1.
func tls11Handshake(addr string) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		c.Close()
	}
	return err
}

// TestWebsocketListenerRefusesOldTLS: SECURITY.md "TLS 1.2 is the minimum
// everywhere" for the relay's websocket listener (the modules' side). Go's
// server default is TLS 1.2 too, so the test turns TLS 1.0/1.1 back on
// (GODEBUG=tls10server=1) to see the relay's own setting, and proves with a
// default server that the switch works.
func TestWebsocketListenerRefusesOldTLS(t *testing.T) {
	t.Setenv("GODEBUG", "tls10server=1")
	control := httptest.NewUnstartedServer(http.NotFoundHandler())
	control.Config.ErrorLog = nil
	control.StartTLS()
	defer control.Close()
	if err := tls11Handshake(control.Listener.Addr().String()); err != nil {
		t.Skipf("this Go refuses TLS 1.1 even with tls10server=1 (%v): nothing to tell apart", err)
	}

	a := startApp(t, minimalConfig(func(c *config.Config) { c.SelfSigned = true }))
	u, err := url.Parse(a.Ready().WebsocketURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := tls11Handshake(u.Host); err == nil {
		t.Error("the relay's websocket listener accepted a TLS 1.1 client")
	}
}
