package testcloud

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine outlives the tests: sessions and the
// server must stop everything they start.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "tok-3f9a1c"

// newCloud starts a test cloud that is closed at the end of the test.
func newCloud(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func startSession(t *testing.T, s *Server) *Session {
	t.Helper()
	ss, err := s.NewSession(testToken)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	return ss
}

// moduleHeader is what the module sends with its upgrade request.
func moduleHeader(auth string) http.Header {
	h := http.Header{}
	if auth != "" {
		h.Set("Authorization", auth)
	}
	h.Set("TunnelConnectionSource", "PnpDevice")
	h.Set("User-Agent", "rtsptunnel/test (linux; amd64)")
	return h
}

// dialModule plays the module: it opens the websocket to url, trusting the cloud's CA.
func dialModule(ctx context.Context, t *testing.T, s *Server, url string, h http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: s.ClientTLSConfig()}
	t.Cleanup(tr.CloseIdleConnections)
	return websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: tr},
		HTTPHeader: h,
	})
}

// connectModule dials url with the right token and fails the test if that fails.
func connectModule(ctx context.Context, t *testing.T, s *Server, ss *Session) *websocket.Conn {
	t.Helper()
	c, _, err := dialModule(ctx, t, s, ss.URL(), moduleHeader("Bearer "+testToken))
	if err != nil {
		t.Fatalf("dial %s: %v", ss.URL(), err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// dialTCP plays the RTSP client.
func dialTCP(ctx context.Context, t *testing.T, ss *Session) net.Conn {
	t.Helper()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", ss.ListenAddr())
	if err != nil {
		t.Fatalf("dial %s: %v", ss.ListenAddr(), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	return conn
}

// readMessages reads binary messages on c until n bytes arrived.
func readMessages(ctx context.Context, c *websocket.Conn, n int) ([]byte, error) {
	var buf bytes.Buffer
	for buf.Len() < n {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return buf.Bytes(), err
		}
		if typ != websocket.MessageBinary {
			return buf.Bytes(), errors.New("text message")
		}
		buf.Write(data)
	}
	return buf.Bytes(), nil
}

// readClose reads c until it fails, as a module keeps reading during a close handshake,
// and returns the close error.
func readClose(ctx context.Context, c *websocket.Conn) error {
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return err
		}
	}
}

// waitClosed waits for the session's end.
func waitClosed(ctx context.Context, t *testing.T, ss *Session) {
	t.Helper()
	select {
	case <-ss.Closed():
	case <-ctx.Done():
		t.Fatal("session did not end")
	}
}

// expectEOF checks that the TCP client was hung up on.
func expectEOF(t *testing.T, conn net.Conn) {
	t.Helper()
	_, err := conn.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("TCP client still connected (read: %v)", err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestUpgradeAnswers(t *testing.T) {
	cloud := newCloud(t, Options{})
	tests := []struct {
		name       string
		setup      func(ctx context.Context, t *testing.T, ss *Session)
		auth       string
		url        func(ss *Session) string
		wantStatus int
	}{
		{name: "bearer token", auth: "Bearer " + testToken, wantStatus: http.StatusSwitchingProtocols},
		{name: "scheme is case-insensitive", auth: "bearer " + testToken, wantStatus: http.StatusSwitchingProtocols},
		{name: "no authorization", wantStatus: http.StatusUnauthorized},
		{name: "wrong token", auth: "Bearer nope", wantStatus: http.StatusUnauthorized},
		{name: "token prefix", auth: "Bearer " + testToken[:len(testToken)-1], wantStatus: http.StatusUnauthorized},
		{name: "token with suffix", auth: "Bearer " + testToken + "x", wantStatus: http.StatusUnauthorized},
		{name: "basic scheme", auth: "Basic " + testToken, wantStatus: http.StatusUnauthorized},
		{name: "no scheme", auth: testToken, wantStatus: http.StatusUnauthorized},
		{
			name:       "refused with 403 despite the right token",
			setup:      func(_ context.Context, _ *testing.T, ss *Session) { ss.Refuse(http.StatusForbidden) },
			auth:       "Bearer " + testToken,
			wantStatus: http.StatusForbidden,
		},
		{
			name:       "refused with 503",
			setup:      func(_ context.Context, _ *testing.T, ss *Session) { ss.Refuse(http.StatusServiceUnavailable) },
			auth:       "Bearer " + testToken,
			wantStatus: http.StatusServiceUnavailable,
		},
		{
			name: "refusal lifted",
			setup: func(_ context.Context, _ *testing.T, ss *Session) {
				ss.Refuse(http.StatusForbidden)
				ss.Refuse(0)
			},
			auth:       "Bearer " + testToken,
			wantStatus: http.StatusSwitchingProtocols,
		},
		{
			name:       "unknown session",
			auth:       "Bearer " + testToken,
			url:        func(ss *Session) string { return strings.TrimSuffix(ss.URL(), ss.ID()) + "unknown" },
			wantStatus: http.StatusNotFound,
		},
		{
			name:       "closed session",
			setup:      func(_ context.Context, _ *testing.T, ss *Session) { ss.Close(websocket.StatusNormalClosure, "") },
			auth:       "Bearer " + testToken,
			wantStatus: http.StatusGone,
		},
		{
			name: "second websocket",
			setup: func(ctx context.Context, t *testing.T, ss *Session) {
				first := connectModule(ctx, t, cloud, ss)
				// Keep reading, so the session's close handshake completes at once.
				go func() { _ = readClose(context.Background(), first) }()
			},
			auth:       "Bearer " + testToken,
			wantStatus: http.StatusConflict,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ss := startSession(t, cloud)
			defer ss.Close(websocket.StatusNormalClosure, "")
			attempts := 0
			if tt.setup != nil {
				tt.setup(ctx, t, ss)
				attempts = ss.Attempts()
			}
			url := ss.URL()
			if tt.url != nil {
				url = tt.url(ss)
			}

			c, res, err := dialModule(ctx, t, cloud, url, moduleHeader(tt.auth))
			if res == nil {
				t.Fatalf("no HTTP response: %v", err)
			}
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d (%v), want %d", res.StatusCode, err, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusUnauthorized && !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", res.Header.Get("WWW-Authenticate"))
			}
			if c != nil {
				_ = c.CloseNow()
				if err := ss.WaitConnected(ctx); err != nil {
					t.Errorf("WaitConnected: %v", err)
				}
			}
			if tt.url != nil {
				return // the session saw nothing
			}

			if got := ss.Attempts(); got != attempts+1 {
				t.Errorf("Attempts() = %d, want %d", got, attempts+1)
			}
			h := ss.Header()
			if got := h.Get("TunnelConnectionSource"); got != "PnpDevice" {
				t.Errorf("recorded TunnelConnectionSource %q", got)
			}
			if got := h.Get("User-Agent"); !strings.HasPrefix(got, "rtsptunnel/") {
				t.Errorf("recorded User-Agent %q", got)
			}
		})
	}
}

func TestSplice(t *testing.T) {
	tests := []struct {
		name     string
		tcpFirst bool // the RTSP client connects before the module's websocket arrives
	}{
		{name: "module first"},
		{name: "client first", tcpFirst: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cloud := newCloud(t, Options{})
			ss := startSession(t, cloud)

			var conn net.Conn
			if tt.tcpFirst {
				conn = dialTCP(ctx, t, ss)
			}
			c := connectModule(ctx, t, cloud, ss)
			if err := ss.WaitConnected(ctx); err != nil {
				t.Fatal(err)
			}
			if !tt.tcpFirst {
				conn = dialTCP(ctx, t, ss)
			}

			// Client to module: an RTSP request, then a bulk upload in pieces.
			req := []byte("OPTIONS rtsp://127.0.0.1/stream RTSP/1.0\r\nCSeq: 1\r\n\r\n")
			bulkUp := randomBytes(100 << 10)
			if _, err := conn.Write(req); err != nil {
				t.Fatal(err)
			}
			got, err := readMessages(ctx, c, len(req))
			if err != nil || !bytes.Equal(got, req) {
				t.Fatalf("module received %q, %v; want %q", got, err, req)
			}
			go func() { _, _ = conn.Write(bulkUp) }()
			got, err = readMessages(ctx, c, len(bulkUp))
			if err != nil || !bytes.Equal(got, bulkUp) {
				t.Fatalf("module received %d bytes (%v), want the %d sent, in order", len(got), err, len(bulkUp))
			}

			// Module to client: a response and one message larger than a TCP segment.
			res := []byte("RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n")
			bulkDown := randomBytes(300 << 10)
			for _, msg := range [][]byte{res, bulkDown} {
				if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
					t.Fatal(err)
				}
			}
			want := append(append([]byte(nil), res...), bulkDown...)
			gotDown := make([]byte, len(want))
			if _, err := io.ReadFull(conn, gotDown); err != nil || !bytes.Equal(gotDown, want) {
				t.Fatalf("client received different bytes (%v)", err)
			}

			if got, want := ss.BytesToModule(), int64(len(req)+len(bulkUp)); got != want {
				t.Errorf("BytesToModule() = %d, want %d", got, want)
			}
			if got, want := ss.BytesFromModule(), int64(len(want)); got != want {
				t.Errorf("BytesFromModule() = %d, want %d", got, want)
			}

			// The camera hangs up: the module closes with 1000, the client sees EOF.
			if err := c.Close(websocket.StatusNormalClosure, "camera closed the connection"); err != nil {
				t.Fatalf("module close: %v", err)
			}
			waitClosed(ctx, t, ss)
			expectEOF(t, conn)
			code, reason := ss.CloseStatus()
			if code != websocket.StatusNormalClosure || reason != "camera closed the connection" {
				t.Errorf("CloseStatus() = %v %q", code, reason)
			}
			if !ss.ModuleClosedFirst() {
				t.Errorf("ModuleClosedFirst() = false")
			}
			if _, err := net.Dial("tcp", ss.ListenAddr()); err == nil {
				t.Errorf("the session's listener accepted a second client")
			}
		})
	}
}

func TestEndings(t *testing.T) {
	tests := []struct {
		name string
		// end ends the tunnel one way; it runs while the module is reading.
		end             func(ctx context.Context, t *testing.T, ss *Session, c *websocket.Conn, conn net.Conn)
		wantModuleSees  websocket.StatusCode // close code the module reads; -1: not checked
		wantStatus      websocket.StatusCode // CloseStatus
		wantModuleFirst bool
	}{
		{
			name: "module reports an internal error",
			end: func(_ context.Context, _ *testing.T, _ *Session, c *websocket.Conn, _ net.Conn) {
				go c.Close(websocket.StatusInternalError, "camera read failed")
			},
			// The module's own Close may consume the echo, so its reader can see either.
			wantModuleSees:  -1,
			wantStatus:      websocket.StatusInternalError,
			wantModuleFirst: true,
		},
		{
			name:           "module connection drops",
			end:            func(_ context.Context, _ *testing.T, _ *Session, c *websocket.Conn, _ net.Conn) { _ = c.CloseNow() },
			wantModuleSees: -1,
			wantStatus:     -1,
		},
		{
			name:           "client hangs up",
			end:            func(_ context.Context, _ *testing.T, _ *Session, _ *websocket.Conn, conn net.Conn) { _ = conn.Close() },
			wantModuleSees: websocket.StatusNormalClosure,
			wantStatus:     websocket.StatusNormalClosure,
		},
		{
			name: "cloud closes with 1000",
			end: func(_ context.Context, _ *testing.T, ss *Session, _ *websocket.Conn, _ net.Conn) {
				go ss.Close(websocket.StatusNormalClosure, "done")
			},
			wantModuleSees: websocket.StatusNormalClosure,
			wantStatus:     websocket.StatusNormalClosure,
		},
		{
			name: "cloud closes with a private code",
			end: func(_ context.Context, _ *testing.T, ss *Session, _ *websocket.Conn, _ net.Conn) {
				go ss.Close(4001, "session expired")
			},
			wantModuleSees: 4001,
			wantStatus:     4001,
		},
		{
			name: "module sends text",
			end: func(ctx context.Context, t *testing.T, _ *Session, c *websocket.Conn, _ net.Conn) {
				if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
					t.Error(err)
				}
			},
			wantModuleSees: websocket.StatusUnsupportedData,
			wantStatus:     websocket.StatusUnsupportedData,
		},
	}
	cloud := newCloud(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ss := startSession(t, cloud)
			defer ss.Close(websocket.StatusNormalClosure, "")
			c := connectModule(ctx, t, cloud, ss)
			conn := dialTCP(ctx, t, ss)

			// One byte each way first, so both halves of the splice are running.
			if _, err := conn.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			if _, err := readMessages(ctx, c, 1); err != nil {
				t.Fatal(err)
			}

			readErr := make(chan error, 1)
			go func() { readErr <- readClose(ctx, c) }()
			tt.end(ctx, t, ss, c, conn)

			err := <-readErr
			if tt.wantModuleSees != -1 {
				if got := websocket.CloseStatus(err); got != tt.wantModuleSees {
					t.Errorf("module read %v, want close code %d", err, tt.wantModuleSees)
				}
			}
			waitClosed(ctx, t, ss)
			expectEOF(t, conn)
			if code, reason := ss.CloseStatus(); code != tt.wantStatus {
				t.Errorf("CloseStatus() = %v %q, want %v", code, reason, tt.wantStatus)
			}
			if got := ss.ModuleClosedFirst(); got != tt.wantModuleFirst {
				t.Errorf("ModuleClosedFirst() = %v, want %v", got, tt.wantModuleFirst)
			}
		})
	}
}

func TestCloseBeforeConnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cloud := newCloud(t, Options{})
	ss := startSession(t, cloud)
	conn := dialTCP(ctx, t, ss)

	waitErr := make(chan error, 1)
	go func() { waitErr <- ss.WaitConnected(ctx) }()
	ss.Close(websocket.StatusNormalClosure, "")

	if err := <-waitErr; err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitConnected() = %v, want a session-closed error", err)
	}
	waitClosed(ctx, t, ss)
	expectEOF(t, conn)
	if code, _ := ss.CloseStatus(); code != -1 {
		t.Errorf("CloseStatus() = %v, want -1", code)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cloud := newCloud(t, Options{MaxMessageSize: 1024})
	ss := startSession(t, cloud)
	c := connectModule(ctx, t, cloud, ss)
	conn := dialTCP(ctx, t, ss)

	if err := c.Write(ctx, websocket.MessageBinary, randomBytes(1024)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1024)); err != nil {
		t.Fatalf("a message at the limit did not arrive: %v", err)
	}
	if err := c.Write(ctx, websocket.MessageBinary, randomBytes(1025)); err != nil {
		t.Fatal(err)
	}
	if err := readClose(ctx, c); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Errorf("module read %v, want close code 1009", err)
	}
	waitClosed(ctx, t, ss)
	expectEOF(t, conn)
}

func TestCertificate(t *testing.T) {
	dir := t.TempDir()
	cloud := newCloud(t, Options{Dir: dir})
	if got, want := cloud.CAFile(), filepath.Join(dir, caFileName); got != want {
		t.Fatalf("CAFile() = %q, want %q", got, want)
	}
	pemBytes, err := os.ReadFile(cloud.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pemBytes, cloud.CAPEM()) {
		t.Errorf("CA file and CAPEM() differ")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("CA file holds no certificate")
	}
	_, port, err := net.SplitHostPort(cloud.Addr())
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		serverName string
		roots      *x509.CertPool
		wantErr    bool
	}{
		{name: "127.0.0.1 with the CA file", serverName: "127.0.0.1", roots: pool},
		{name: "localhost with the CA file", serverName: "localhost", roots: pool},
		{name: "system roots only", serverName: "127.0.0.1", wantErr: true},
		{name: "another host name", serverName: "example.com", roots: pool, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &tls.Dialer{Config: &tls.Config{ServerName: tt.serverName, RootCAs: tt.roots}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
			if err == nil {
				defer conn.Close()
				if proto := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; proto != "" && proto != "http/1.1" {
					t.Errorf("negotiated %q, want http/1.1", proto)
				}
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("TLS handshake error = %v, want error: %v", err, tt.wantErr)
			}
		})
	}

	cloud.Close()
	if _, err := os.Stat(cloud.CAFile()); err != nil {
		t.Errorf("a CA file in a given Dir must survive Close: %v", err)
	}
}

func TestServerClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cloud, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cloud.Close()
	live := startSession(t, cloud)
	idle := startSession(t, cloud)
	c := connectModule(ctx, t, cloud, live)

	readErr := make(chan error, 1)
	go func() { readErr <- readClose(ctx, c) }()
	cloud.Close()
	cloud.Close() // idempotent

	if err := <-readErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("module read %v, want 1001", err)
	}
	for _, ss := range []*Session{live, idle} {
		waitClosed(ctx, t, ss)
	}
	if _, err := os.Stat(cloud.CAFile()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary CA file left behind: %v", err)
	}
	if _, err := cloud.NewSession(testToken); err == nil {
		t.Errorf("NewSession after Close succeeded")
	}
	if _, err := net.Dial("tcp", cloud.Addr()); err == nil {
		t.Errorf("server still listening after Close")
	}
}

func TestNewErrors(t *testing.T) {
	cloud := newCloud(t, Options{})
	if _, err := cloud.NewSession(""); err == nil {
		t.Errorf("NewSession(\"\") succeeded")
	}
	tests := []struct {
		name string
		opts Options
	}{
		{"address in use", Options{Addr: cloud.Addr()}},
		{"bad address", Options{Addr: "127.0.0.1"}},
		{"missing directory", Options{Dir: filepath.Join(t.TempDir(), "missing")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.opts)
			if err == nil {
				s.Close()
				t.Fatalf("New(%+v) succeeded", tt.opts)
			}
		})
	}
}
