package tunnel

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

const secretToken = "tok-SECRET-123"

// remoteServer is a TLS websocket endpoint that records the upgrade requests
// and echoes binary messages.
type remoteServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
}

func newRemoteServer(t *testing.T, handler http.HandlerFunc) *remoteServer {
	t.Helper()
	rs := &remoteServer{}
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			c.SetReadLimit(-1)
			for {
				typ, b, err := c.Read(r.Context())
				if err != nil {
					return
				}
				if c.Write(r.Context(), typ, b) != nil {
					return
				}
			}
		}
	}
	rs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.mu.Lock()
		rs.requests = append(rs.requests, r.Clone(context.Background()))
		rs.mu.Unlock()
		handler(w, r)
	}))
	rs.Config.ErrorLog = log.New(io.Discard, "", 0) // expected TLS failures
	rs.StartTLS()
	t.Cleanup(rs.Close)
	return rs
}

func (rs *remoteServer) roots() *x509.CertPool {
	return rs.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
}

func (rs *remoteServer) wss(path string) string {
	return strings.Replace(rs.URL, "https://", "wss://", 1) + path
}

func (rs *remoteServer) lastRequest() *http.Request {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.requests) == 0 {
		return nil
	}
	return rs.requests[len(rs.requests)-1]
}

func TestDialHeadersAndEcho(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	rs := newRemoteServer(t, nil)
	c, err := Dial(ctx, rs.wss("/tunnel/abc?sig=x"), DialOptions{Token: secretToken, UserAgent: UserAgent("1.2.3"), RootCAs: rs.roots(), HandshakeTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	r := rs.lastRequest()
	for h, want := range map[string]string{
		"Authorization":            "Bearer " + secretToken,
		"Tunnelconnectionsource":   "PnpDevice",
		"User-Agent":               "rtsptunnel/1.2.3 (",
		"Sec-Websocket-Extensions": "",
	} {
		if got := r.Header.Get(h); !strings.HasPrefix(got, want) || (want == "" && got != "") {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	if !strings.HasSuffix(r.Header.Get("User-Agent"), ") azure-iot-edge-module") {
		t.Errorf("User-Agent = %q", r.Header.Get("User-Agent"))
	}
	if r.URL.Path != "/tunnel/abc" || r.URL.RawQuery != "sig=x" {
		t.Errorf("request URL = %v", r.URL)
	}
	// A 1 MiB message each way.
	big := randomBytes(1<<20, 5)
	if err := c.Write(ctx, websocket.MessageBinary, big); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(ctx); err != nil || len(b) != len(big) {
		t.Fatalf("echo: %d bytes, %v", len(b), err)
	}
	c.Close(websocket.StatusNormalClosure, "")
}

// TestDialAbort: Abort fails a read blocked on a remote that sends nothing,
// at once and without a close handshake.
func TestDialAbort(t *testing.T) {
	ctx := testutil.Context(t, 60*time.Second)
	rs := newRemoteServer(t, func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.Read(r.Context()) // silent: never writes; returns when the client goes
	})
	c, err := Dial(ctx, rs.wss("/tunnel"), DialOptions{Token: secretToken, RootCAs: rs.roots()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	read := make(chan error, 1)
	go func() { _, _, err := c.Read(context.Background()); read <- err }()
	time.Sleep(50 * time.Millisecond) // let the read block
	c.Abort()
	select {
	case err := <-read:
		if err == nil {
			t.Error("read after Abort succeeded")
		}
	case <-time.After(20 * time.Second):
		// The remote never writes and the read has no deadline: without
		// Abort it would block forever, so a 20 s bound (not a tight one)
		// tells the two apart on a loaded machine.
		t.Fatal("Abort did not end a blocked read")
	}
}

func TestDialErrors(t *testing.T) {
	ctx := testutil.Context(t, 60*time.Second)
	refused := testutil.FreeAddr(t)  // a port nobody listens on
	silent := testutil.SilentAddr(t) // accepts, never answers

	status := func(code int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if code == http.StatusFound {
				http.Redirect(w, r, "https://elsewhere.example/", code)
				return
			}
			w.WriteHeader(code)
		}
	}
	for _, tc := range []struct {
		name       string
		handler    http.HandlerFunc
		endpoint   func(rs *remoteServer) string
		roots      bool
		wantStatus int
		wantText   string
	}{
		{name: "unauthorized", handler: status(401), roots: true, wantStatus: 401, wantText: "HTTP 401 Unauthorized"},
		{name: "not found", handler: status(404), roots: true, wantStatus: 404},
		{name: "server error", handler: status(503), roots: true, wantStatus: 503},
		{name: "redirect not followed", handler: status(302), roots: true, wantStatus: 302},
		{name: "200 is not a websocket", handler: status(200), roots: true, wantStatus: 0},
		{name: "untrusted certificate", roots: false, wantStatus: 0, wantText: "certificate"},
		{name: "connection refused", endpoint: func(*remoteServer) string { return "wss://" + refused + "/x?sig=SECRETQ" }, wantStatus: 0, wantText: "refused"},
		{name: "handshake timeout", endpoint: func(*remoteServer) string { return "wss://" + silent + "/x?sig=SECRETQ" }, wantStatus: 0, wantText: "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := newRemoteServer(t, tc.handler)
			endpoint := rs.wss("/tunnel/1?sig=SECRETQ&x=%2Fy#frag")
			if tc.endpoint != nil {
				endpoint = tc.endpoint(rs)
			}
			// A handshake timeout far above what a loaded machine needs,
			// except where the timeout is the case under test: there the
			// silent server never answers, so "timed out" before the test's
			// context ends shows the timeout at work (no wall-clock bound:
			// the untrusted-certificate case once lost to a 500 ms timeout
			// on a loaded machine).
			opts := DialOptions{Token: secretToken, HandshakeTimeout: 10 * time.Second}
			if tc.name == "handshake timeout" {
				opts.HandshakeTimeout = 500 * time.Millisecond
			}
			if tc.roots {
				opts.RootCAs = rs.roots()
			}
			c, err := Dial(ctx, endpoint, opts)
			if err == nil {
				c.CloseNow()
				t.Fatal("no error")
			}
			var de *DialError
			if !errors.As(err, &de) || de.StatusCode != tc.wantStatus || HTTPStatus(err) != tc.wantStatus {
				t.Errorf("error %v: status %d, want %d", err, HTTPStatus(err), tc.wantStatus)
			}
			msg := err.Error()
			for _, secret := range []string{secretToken, "SECRETQ", "sig=", "frag"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q leaks %q", msg, secret)
				}
			}
			if !strings.Contains(msg, tc.wantText) {
				t.Errorf("error %q lacks %q", msg, tc.wantText)
			}
			if de.Endpoint != RedactURL(endpoint) || strings.Contains(de.Endpoint, "?") {
				t.Errorf("Endpoint = %q", de.Endpoint)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"wss://user:pw@relay.example.com:8443/a/b?token=x#f": "wss://relay.example.com:8443/a/b",
		"wss://relay.example.com":                            "wss://relay.example.com",
		"%zz":                                                "",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// connectProxy is an HTTP CONNECT proxy that sends every tunnel to backend
// and records the targets it was asked for.
type connectProxy struct {
	*httptest.Server
	mu      sync.Mutex
	targets []string
	wg      sync.WaitGroup
}

func newConnectProxy(t *testing.T, backend string) *connectProxy {
	p := &connectProxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		p.mu.Lock()
		p.targets = append(p.targets, r.Host)
		p.mu.Unlock()
		up, err := net.Dial("tcp", backend)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		down, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
		p.wg.Go(func() { io.Copy(up, brw.Reader); up.Close() }) // brw may hold early bytes
		p.wg.Go(func() { io.Copy(down, up); down.Close() })
	}))
	t.Cleanup(func() {
		p.Close()
		p.wg.Wait()
	})
	return p
}

func TestDialThroughProxy(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	rs := newRemoteServer(t, nil)
	proxy := newConnectProxy(t, rs.Listener.Addr().String())
	proxyURL, _ := url.Parse(proxy.URL)
	// example.com is in the test server's certificate; the proxy resolves it to the server.
	c, err := Dial(ctx, "wss://example.com/tunnel", DialOptions{Token: secretToken, RootCAs: rs.roots(), Proxy: http.ProxyURL(proxyURL)})
	if err != nil {
		t.Fatal(err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	if len(proxy.targets) != 1 || proxy.targets[0] != "example.com:443" {
		t.Errorf("proxy targets = %v", proxy.targets)
	}
}

// TestDialHonoursProxyEnvironment runs in a child process because net/http
// reads HTTPS_PROXY and NO_PROXY only once per process.
func TestDialHonoursProxyEnvironment(t *testing.T) {
	if os.Getenv("TUNNEL_PROXY_CHILD") != "1" {
		cmd := exec.CommandContext(testutil.Context(t, 60*time.Second), os.Args[0], "-test.run=^TestDialHonoursProxyEnvironment$", "-test.count=1")
		cmd.Env = append(os.Environ(), "TUNNEL_PROXY_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	ctx := testutil.Context(t, 10*time.Second)
	rs := newRemoteServer(t, nil)
	proxy := newConnectProxy(t, rs.Listener.Addr().String())
	t.Setenv("HTTPS_PROXY", proxy.URL)
	t.Setenv("NO_PROXY", "direct.invalid")
	c, err := Dial(ctx, "wss://example.com/tunnel", DialOptions{Token: secretToken, RootCAs: rs.roots()})
	if err != nil {
		t.Fatal(err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	// NO_PROXY: dialled directly (and failing to resolve), not through the proxy.
	if c, err := Dial(ctx, "wss://direct.invalid/tunnel", DialOptions{Token: secretToken, HandshakeTimeout: 2 * time.Second}); err == nil {
		c.CloseNow()
	}
	proxy.mu.Lock()
	defer proxy.mu.Unlock()
	if len(proxy.targets) != 1 || proxy.targets[0] != "example.com:443" {
		t.Errorf("proxy targets = %v, want only example.com:443", proxy.targets)
	}
}
