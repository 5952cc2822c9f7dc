package identity

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestTLSConfigRefusesOldTLS: SECURITY.md "TLS 1.2 is the minimum everywhere"
// for the connection to edgeHub / IoT Hub: the configuration every identity
// mode hands to the MQTT client refuses a server that speaks at most TLS 1.1.
func TestTLSConfigRefusesOldTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	srv.StartTLS()
	defer srv.Close()
	id := &Identity{GatewayHostName: "example.com", roots: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	conf := id.TLSConfig()
	if conf.MinVersion < tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want at least TLS 1.2", conf.MinVersion)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", srv.Listener.Addr().String(), conf)
	if err == nil {
		c.Close()
		t.Fatal("handshake with a TLS 1.1 server succeeded")
	}
}
