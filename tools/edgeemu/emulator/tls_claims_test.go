package emulator_test

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

// TestEmulatorRefusesOldTLS: SECURITY.md "TLS 1.2 is the minimum everywhere"
// for the emulator's MQTT and HTTPS listeners and the client configuration
// it hands out. Go's server default is TLS 1.2 too, so the test turns TLS
// 1.0/1.1 back on (GODEBUG=tls10server=1) to see the emulator's own setting,
// and proves with a default server that the switch works.
func TestEmulatorRefusesOldTLS(t *testing.T) {
	t.Setenv("GODEBUG", "tls10server=1")
	old := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	handshake := func(addr string) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, old)
		if err == nil {
			c.Close()
		}
		return err
	}
	control := httptest.NewUnstartedServer(http.NotFoundHandler())
	control.StartTLS()
	defer control.Close()
	if err := handshake(control.Listener.Addr().String()); err != nil {
		t.Skipf("this Go refuses TLS 1.1 even with tls10server=1 (%v): nothing to tell apart", err)
	}

	e := start(t, emulator.Options{})
	for name, port := range map[string]int{"MQTT": e.MQTTPort(), "HTTPS": e.HTTPSPort()} {
		if err := handshake(net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			t.Errorf("the %s listener accepted a TLS 1.1 client", name)
		}
	}
	if v := e.TLSConfig("127.0.0.1").MinVersion; v < tls.VersionTLS12 {
		t.Errorf("client TLSConfig MinVersion = %x, want at least TLS 1.2", v)
	}
}
