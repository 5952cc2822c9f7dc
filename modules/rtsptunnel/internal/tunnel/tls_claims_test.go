package tunnel

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

// TestDialRefusesOldTLS: SECURITY.md "TLS 1.2 is the minimum everywhere" for
// the websocket to the remote endpoint: a server that speaks at most TLS 1.1
// is refused before any HTTP request (and so before the token) is sent.
func TestDialRefusesOldTLS(t *testing.T) {
	ctx := testutil.Context(t, 20*time.Second)
	requests := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { requests++ }))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	srv.Config.ErrorLog = nil
	srv.StartTLS()
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	c, err := Dial(ctx, "wss://"+u.Host+"/t", DialOptions{
		Token:   secretToken,
		RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs,
		Proxy:   func(*http.Request) (*url.URL, error) { return nil, nil },
	})
	if err == nil {
		c.CloseNow()
		t.Fatal("Dial succeeded with a TLS 1.1 server")
	}
	if requests != 0 {
		t.Errorf("%d requests reached the TLS 1.1 server", requests)
	}
}
