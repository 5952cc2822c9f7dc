package session

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "eyJhbGciOi.SECRET-TOKEN.sig"

// camera is a TCP listener standing in for an RTSP camera. Accepted
// connections arrive on conns and are closed at the end of the test.
type camera struct {
	ln    net.Listener
	conns chan net.Conn
	wg    sync.WaitGroup

	mu    sync.Mutex
	taken []net.Conn // returned by next; closed at the end of the test
}

func newCamera(t *testing.T) *camera {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &camera{ln: ln, conns: make(chan net.Conn, 100)}
	c.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.conns <- conn
		}
	})
	t.Cleanup(func() {
		ln.Close()
		c.wg.Wait()
		close(c.conns)
		for conn := range c.conns {
			conn.Close()
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, conn := range c.taken {
			conn.Close()
		}
	})
	return c
}

func (c *camera) addr() string { return c.ln.Addr().String() }

// next returns the next accepted camera connection.
func (c *camera) next(t *testing.T, ctx context.Context) net.Conn {
	t.Helper()
	select {
	case conn := <-c.conns:
		c.mu.Lock()
		c.taken = append(c.taken, conn)
		c.mu.Unlock()
		return conn
	case <-ctx.Done():
		t.Fatal("camera was not dialled")
		return nil
	}
}

// cloud is a TLS websocket endpoint standing in for the video service.
type cloud struct {
	*httptest.Server
	caFile string
	refuse atomic.Int32 // when non-zero, handshakes are refused with this status
	conns  chan *cloudConn

	mu   sync.Mutex
	reqs []*http.Request
	all  []*websocket.Conn
}

type cloudConn struct {
	ws  *websocket.Conn
	req *http.Request
}

func newCloud(t *testing.T) *cloud {
	t.Helper()
	c := &cloud{conns: make(chan *cloudConn, 100)}
	c.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.reqs = append(c.reqs, r.Clone(context.Background()))
		c.mu.Unlock()
		if code := c.refuse.Load(); code != 0 {
			http.Error(w, "refused", int(code))
			return
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		ws.SetReadLimit(-1)
		c.mu.Lock()
		c.all = append(c.all, ws)
		c.mu.Unlock()
		c.conns <- &cloudConn{ws: ws, req: r}
	}))
	c.Config.ErrorLog = log.New(io.Discard, "", 0)
	c.StartTLS()
	c.caFile = testutil.WriteCertFile(t, "cloud-ca.pem", c.Certificate())
	t.Cleanup(func() {
		c.closeAll()
		c.Close()
	})
	return c
}

// closeAll drops every accepted websocket without a close handshake.
func (c *cloud) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ws := range c.all {
		ws.CloseNow()
	}
}

// endpoint returns a wss URL on the cloud with a secret in the query string.
func (c *cloud) endpoint(path string) string {
	return strings.Replace(c.URL, "https://", "wss://", 1) + path + "?sig=QUERY-SECRET"
}

// drain reads cc until it closes, as a live peer does (answering pings and
// the close handshake), and returns a channel with the close code it saw.
func (cc *cloudConn) drain(ctx context.Context) <-chan websocket.StatusCode {
	code := make(chan websocket.StatusCode, 1)
	go func() {
		for {
			if _, _, err := cc.ws.Read(ctx); err != nil {
				code <- websocket.CloseStatus(err)
				return
			}
		}
	}()
	return code
}

func (c *cloud) next(t *testing.T, ctx context.Context) *cloudConn {
	t.Helper()
	select {
	case cc := <-c.conns:
		return cc
	case <-ctx.Done():
		t.Fatal("no websocket reached the cloud")
		return nil
	}
}

// harness is a Manager wired to a camera and a cloud.
type harness struct {
	m      *Manager
	camera *camera
	cloud  *cloud
	logs   *testutil.LogBuffer
	reg    *prometheus.Registry
}

// newHarness starts a Manager whose port 554 maps to a test camera and which
// trusts the test cloud. mutate adjusts the settings before Initialize.
func newHarness(t *testing.T, mutate func(*settings.Settings)) *harness {
	t.Helper()
	h := &harness{camera: newCamera(t), cloud: newCloud(t), logs: &testutil.LogBuffer{}, reg: prometheus.NewRegistry()}
	s := settings.Defaults()
	s.Targets = settings.Targets{554: h.camera.addr()}
	s.RemoteCAFile = h.cloud.caFile
	s.AllowedRemoteHosts = []string{"127.0.0.1", "relay.example.com"} // the test cloud is on loopback: name it
	s.OpenTimeout = 5 * time.Second
	if mutate != nil {
		mutate(&s)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	met, err := metrics.New(h.reg, metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.m = &Manager{
		Settings: s,
		Logger:   h.logs.Logger(),
		Metrics:  met,
		Version:  "test-version",
	}
	return h
}

// start initialises the Manager and shuts it down at the end of the test.
func (h *harness) start(t *testing.T) *harness {
	t.Helper()
	if err := h.m.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Peers that the test stopped reading would hold each close handshake
		// for its timeout; TestShutdown covers the graceful path.
		h.cloud.closeAll()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.m.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if strings.Contains(h.logs.String(), "SECRET") {
			t.Errorf("a secret reached the logs:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *harness) payload(endpoint string, port any) []byte {
	b, _ := json.Marshal(map[string]any{"remoteEndpoint": endpoint, "remoteAuthorizationToken": testToken, "localPort": port})
	return b
}

type openResponse struct {
	status int
	body   map[string]string
	raw    string
}

func (h *harness) open(t *testing.T, ctx context.Context, payload []byte) openResponse {
	t.Helper()
	status, body := h.m.HandleTunnelOpen(ctx, payload)
	r := openResponse{status: status, raw: string(body)}
	if err := json.Unmarshal(body, &r.body); err != nil {
		t.Fatalf("body %q is not a JSON object of strings: %v", body, err)
	}
	if strings.Contains(r.raw, "SECRET") {
		t.Fatalf("body leaks a secret: %s", r.raw)
	}
	return r
}

func (h *harness) sessionInfo(id string) (Info, bool) {
	for _, i := range h.m.Snapshot().Sessions {
		if i.ID == id {
			return i, true
		}
	}
	return Info{}, false
}
