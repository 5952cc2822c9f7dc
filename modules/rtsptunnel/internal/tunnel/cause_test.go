package tunnel

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

// refusingProxy answers every CONNECT with status.
func refusingProxy(t *testing.T, status int) string {
	t.Helper()
	p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status == http.StatusProxyAuthRequired {
			w.Header().Set("Proxy-Authenticate", `Basic realm="proxy"`)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(p.Close)
	return p.URL
}

// TestDialCauses: each way a dial fails gives a reason from the fixed set
// and a short cause with no token, query string, proxy credentials or URL,
// for the method answer and the twin (issue 14 item 9).
func TestDialCauses(t *testing.T) {
	ctx := testutil.Context(t, 60*time.Second)
	ok := newRemoteServer(t, nil)
	unauthorized := newRemoteServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(401) })
	notWS := newRemoteServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	withCreds := func(raw string) *url.URL {
		u, _ := url.Parse(raw)
		u.User = url.UserPassword("camuser", "PROXYSECRET")
		return u
	}
	for _, tc := range []struct {
		name     string
		endpoint string
		proxy    *url.URL
		roots    bool
		reason   DialReason
		cause    string
	}{
		{"proxy answers 403", "wss://relay.example.com:8443/t/1?sig=SECRETQ", withCreds(refusingProxy(t, 403)), true, ReasonProxyRefused, "the proxy refused CONNECT: 403 Forbidden"},
		{"proxy answers 407", "wss://relay.example.com/t/1?sig=SECRETQ", withCreds(refusingProxy(t, 407)), true, ReasonProxyAuth, "the proxy refused CONNECT: 407 Proxy Authentication Required (check the credentials in HTTPS_PROXY)"},
		{"proxy answers 502", "wss://relay.example.com/t/1?sig=SECRETQ", withCreds(refusingProxy(t, 502)), true, ReasonProxyRefused, "the proxy refused CONNECT: 502 Bad Gateway"},
		{"proxy port refused", "wss://relay.example.com/t/1?sig=SECRETQ", withCreds("http://" + testutil.FreeAddr(t)), true, ReasonProxyUnreachable, "could not connect to the proxy: connection refused"},
		{"endpoint refuses the connection", "wss://" + testutil.FreeAddr(t) + "/t/1?sig=SECRETQ", nil, true, ReasonRefused, "the endpoint refused the connection"},
		{"untrusted certificate", ok.wss("/t/1?sig=SECRETQ"), nil, false, ReasonTLS, "TLS certificate verification failed: x509: certificate signed by unknown authority"},
		{"endpoint answers 401", unauthorized.wss("/t/1?sig=SECRETQ"), nil, true, ReasonHTTPStatus, "the endpoint answered HTTP 401 Unauthorized"},
		{"not a websocket", notWS.wss("/t/1?sig=SECRETQ"), nil, true, ReasonHandshake, "the endpoint's answer was not a websocket handshake"},
		// A DNS failure comes from the dialer (injected: no packet to a name server).
		{"DNS", "wss://no-such-host.invalid/t/1?sig=SECRETQ", nil, true, ReasonDNS, "DNS lookup of no-such-host.invalid failed: no such host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := DialOptions{Token: secretToken, Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }}
			if tc.proxy != nil {
				opts.Proxy = http.ProxyURL(tc.proxy)
			}
			if tc.reason == ReasonDNS {
				opts.DialContext = func(context.Context, string, string) (net.Conn, error) {
					return nil, &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "no-such-host.invalid", IsNotFound: true}}
				}
			}
			if tc.roots {
				opts.RootCAs = ok.roots()
			}
			c, err := Dial(ctx, tc.endpoint, opts)
			if err == nil {
				c.CloseNow()
				t.Fatal("no error")
			}
			var de *DialError
			if !errors.As(err, &de) {
				t.Fatalf("error %v is not a DialError", err)
			}
			if de.Reason != tc.reason || !strings.HasPrefix(de.Cause, tc.cause) {
				t.Errorf("reason %q cause %q; want %q %q (error: %v)", de.Reason, de.Cause, tc.reason, tc.cause, err)
			}
			for _, secret := range []string{secretToken, "SECRETQ", "PROXYSECRET", "camuser", "wss://", "http://"} {
				if strings.Contains(de.Cause, secret) {
					t.Errorf("cause %q contains %q", de.Cause, secret)
				}
			}
		})
	}
}
