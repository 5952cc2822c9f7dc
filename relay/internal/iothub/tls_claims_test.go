package iothub

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

// TestNewHTTPClientRefusesOldTLS: SECURITY.md "TLS 1.2 is the minimum
// everywhere" for the relay's IoT Hub REST client: a server that speaks at
// most TLS 1.1 is refused before the request (and its SAS token) is sent.
func TestNewHTTPClientRefusesOldTLS(t *testing.T) {
	requests := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { requests++ }))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	srv.StartTLS()
	defer srv.Close()
	ca := testutil.CertPEM(srv.Certificate().Raw)
	c, err := NewHTTPClient(ca)
	if err != nil {
		t.Fatal(err)
	}
	if v := c.Transport.(*http.Transport).TLSClientConfig.MinVersion; v < tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want at least TLS 1.2", v)
	}
	resp, err := c.Get(srv.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatal("request to a TLS 1.1 server succeeded")
	}
	if requests != 0 {
		t.Errorf("%d requests reached the TLS 1.1 server", requests)
	}
}
