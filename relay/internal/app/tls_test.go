package app

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/config"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

func TestSelfSignedCovers(t *testing.T) {
	pair, certPEM, err := selfSigned([]string{"relay.example.com", "127.0.0.1", "127.0.0.1", "::1", ""}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	for _, name := range []string{"relay.example.com", "127.0.0.1", "::1"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("certificate does not verify for %s: %v", name, err)
		}
	}
	if len(cert.IPAddresses) != 2 || len(pair.Certificate) != 1 {
		t.Errorf("IPs %v", cert.IPAddresses)
	}
}

// TestWebsocketTLSModes starts the relay with each way of serving the
// websocket endpoint and checks that an unauthorized dial gets 401 over the
// expected transport.
func TestWebsocketTLSModes(t *testing.T) {
	// A pair written to files, as an operator would provide: a leaf of
	// the operator's CA, made apart from the relay's own self-signing.
	ca := testutil.NewCA(t)
	certFile, keyFile := ca.Issue(t, "127.0.0.1").WriteFiles(t, t.TempDir())

	tests := []struct {
		name   string
		set    func(*config.Config)
		scheme string
		caPEM  func(a *App) []byte
	}{
		{"cert files", func(c *config.Config) { c.TLSCertFile, c.TLSKeyFile = certFile, keyFile }, "wss",
			func(*App) []byte { return ca.CertPEM }},
		{"self-signed", func(c *config.Config) { c.SelfSigned = true }, "wss",
			func(a *App) []byte { b, _ := os.ReadFile(a.Ready().CAFile); return b }},
		{"insecure", func(c *config.Config) { c.InsecureWS = true }, "ws", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testutil.Context(t, 10*time.Second)
			a := startApp(t, minimalConfig(tt.set))
			u := a.Ready().WebsocketURL
			if !strings.HasPrefix(u, tt.scheme+"://127.0.0.1:") {
				t.Fatalf("websocketURL %q", u)
			}
			tr := &http.Transport{}
			if tt.caPEM != nil {
				tr.TLSClientConfig = &tls.Config{RootCAs: testutil.PoolFromPEM(t, tt.caPEM(a))}
			}
			defer tr.CloseIdleConnections()
			httpURL := "http" + strings.TrimPrefix(u, "ws") + "/tunnels/nope"
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, httpURL, nil)
			req.Header.Set("Authorization", "Bearer x")
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
			if tt.scheme == "wss" && resp.TLS == nil {
				t.Fatal("not TLS")
			}
			if resp.TLS != nil && resp.TLS.NegotiatedProtocol == "h2" {
				t.Fatal("HTTP/2 negotiated; websockets need HTTP/1.1")
			}
		})
	}
}

func TestInitializeErrorsNameTheSetting(t *testing.T) {
	tests := []struct {
		name string
		set  func(*config.Config)
		want string
	}{
		{"missing cert", func(c *config.Config) { c.TLSCertFile, c.TLSKeyFile = "/nonexistent.crt", "/nonexistent.key" }, "tlsCertFile/tlsKeyFile"},
		{"missing hub CA", func(c *config.Config) { c.InsecureWS = true; c.IoTHub.CAFile = "/nonexistent.pem" }, "iotHub.caFile"},
		{"bad ws listen", func(c *config.Config) { c.InsecureWS = true; c.WebsocketListen = "192.0.2.1:1" }, "websocketListen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newApp(minimalConfig(tt.set))
			err := a.Initialize()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Initialize: %v, want an error naming %s", err, tt.want)
			}
			a.Close()
		})
	}
}
