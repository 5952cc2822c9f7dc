package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/identity"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

func testIdentity(t *testing.T, cs string) *identity.Identity {
	t.Helper()
	ctx := testutil.Context(t, 5*time.Second)
	id, err := identity.Load(ctx, func(k string) string {
		if k == identity.EnvConnectionString {
			return cs
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

const testKey = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="

func TestUsernameAndBroker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cs, transport string
		port          int
		user, broker  string
		clientID      string
	}{
		{
			cs:   "HostName=hub.azure-devices.net;DeviceId=dev;ModuleId=mod;SharedAccessKey=" + testKey,
			user: "hub.azure-devices.net/dev/mod/?api-version=2021-04-12&model-id=dtmi%3Aazure%3Avideoanalyzer%3AWebSocketTunneling%3B1",
			// No gateway: connect to the hub itself on 8883.
			broker: "tls://hub.azure-devices.net:8883", clientID: "dev/mod",
		},
		{
			cs:   "HostName=hub.azure-devices.net;DeviceId=dev;SharedAccessKey=" + testKey + ";GatewayHostName=edge.local",
			user: "hub.azure-devices.net/dev/?api-version=2021-04-12&model-id=dtmi%3Aazure%3Avideoanalyzer%3AWebSocketTunneling%3B1",
			// Device identity through a gateway, over WebSockets on 443.
			transport: "MQTTWS", broker: "wss://edge.local:443/$iothub/websocket", clientID: "dev",
		},
		{
			cs:     "HostName=hub;DeviceId=dev;SharedAccessKey=" + testKey,
			port:   18883,
			user:   "hub/dev/?api-version=2021-04-12&model-id=dtmi%3Aazure%3Avideoanalyzer%3AWebSocketTunneling%3B1",
			broker: "tls://hub:18883", clientID: "dev",
		},
	}
	for _, tt := range tests {
		id := testIdentity(t, tt.cs)
		c, err := New(Options{Identity: id, Transport: tt.transport, Port: tt.port})
		if err != nil {
			t.Fatal(err)
		}
		if c.username != tt.user || c.broker != tt.broker || id.ClientID() != tt.clientID {
			t.Errorf("%s: username %q broker %q client id %q, want %q %q %q", tt.cs, c.username, c.broker, id.ClientID(), tt.user, tt.broker, tt.clientID)
		}
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	id := testIdentity(t, "HostName=h;DeviceId=d;SharedAccessKey="+testKey)
	for _, o := range []Options{
		{},
		{Identity: id, Transport: "amqp"},
		{Identity: id, Port: 70000},
		{Identity: id, TokenLifetime: time.Second},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

func TestTopics(t *testing.T) {
	t.Parallel()
	methods := []struct {
		topic, name, rid string
		ok               bool
	}{
		{"$iothub/methods/POST/tunnelOpen/?$rid=1a", "tunnelOpen", "1a", true},
		{"$iothub/methods/POST/tunnelOpen?$rid=7", "tunnelOpen", "7", true},
		{"$iothub/methods/POST/a%20b/?$rid=x%2By", "a b", "x%2By", true}, // rid echoed verbatim
		{"$iothub/methods/POST/m/?$rid=", "", "", false},
		{"$iothub/methods/POST//?$rid=1", "", "", false},
		{"$iothub/methods/POST/a/b/?$rid=1", "", "", false},
		{"$iothub/twin/res/200/?$rid=1", "", "", false},
	}
	for _, tt := range methods {
		name, rid, err := parseMethodTopic(tt.topic)
		if (err == nil) != tt.ok || name != tt.name || rid != tt.rid {
			t.Errorf("parseMethodTopic(%q) = %q %q %v", tt.topic, name, rid, err)
		}
	}
	twins := []struct {
		topic           string
		status, version int
		rid             string
		ok              bool
	}{
		{"$iothub/twin/res/200/?$rid=5", 200, 0, "5", true},
		{"$iothub/twin/res/204/?$rid=6&$version=12", 204, 12, "6", true},
		{"$iothub/twin/res/429/?$version=3&$rid=7", 429, 3, "7", true},
		{"$iothub/twin/res/abc/?$rid=1", 0, 0, "", false},
		{"$iothub/twin/res/200/", 0, 0, "", false},
		{"$iothub/twin/res/204/?$rid=1&$version=x", 0, 0, "", false},
	}
	for _, tt := range twins {
		status, rid, version, err := parseTwinResponseTopic(tt.topic)
		if (err == nil) != tt.ok || status != tt.status || rid != tt.rid || version != tt.version {
			t.Errorf("parseTwinResponseTopic(%q) = %d %q %d %v", tt.topic, status, rid, version, err)
		}
	}
	if got := methodResponseTopic(404, "x%2By"); got != "$iothub/methods/res/404/?$rid=x%2By" {
		t.Errorf("methodResponseTopic = %q", got)
	}
}

func TestInvoke(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 5*time.Second)
	log := slog.New(slog.DiscardHandler)
	big := `"` + strings.Repeat("x", maxMethodResponse) + `"`
	var seen []byte
	tests := []struct {
		name    string
		h       MethodHandler
		payload string
		status  int
		body    string
	}{
		{"none", nil, `{}`, 404, `{"code":"404","target":"m","message":"method is not implemented"}`},
		{"raw empty payload", func(_ context.Context, p []byte) (int, []byte) { seen = p; return 200, []byte(`{"ok":true}`) }, ``, 200, `{"ok":true}`},
		{"empty body", func(context.Context, []byte) (int, []byte) { return 200, nil }, `{}`, 200, `{}`},
		{"blank body", func(context.Context, []byte) (int, []byte) { return 201, []byte(" \n") }, `{}`, 201, `{}`},
		{"not json", func(context.Context, []byte) (int, []byte) { return 200, []byte(`{`) }, `{}`, 500, string(internalErrorBody)},
		{"panic", func(context.Context, []byte) (int, []byte) { panic(errors.New("x")) }, `{}`, 500, string(internalErrorBody)},
		{"bad status", func(context.Context, []byte) (int, []byte) { return -1, nil }, `{}`, 500, string(internalErrorBody)},
		{"too big", func(context.Context, []byte) (int, []byte) { return 200, []byte(big) }, `{}`, 500, `{"code":"500","target":"m","message":"method response exceeds 128 KB"}`},
		{"status passed through", func(context.Context, []byte) (int, []byte) { return 400, []byte(`{"code":"400"}`) }, `{}`, 400, `{"code":"400"}`},
	}
	for _, tt := range tests {
		status, body := invoke(ctx, log, "m", tt.h, []byte(tt.payload))
		if status != tt.status || string(body) != tt.body {
			t.Errorf("%s: %d %.80s, want %d %s", tt.name, status, body, tt.status, tt.body)
		}
	}
	if seen == nil || len(seen) != 0 {
		t.Errorf("handler saw payload %q, want the empty raw payload", seen)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	min, max := 100*time.Millisecond, 2*time.Second
	for attempt := 1; attempt < 100; attempt++ {
		want := max
		if attempt < 6 {
			want = min << (attempt - 1)
		}
		for range 20 {
			d := backoff(attempt, min, max)
			if d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}

func TestRenewalTime(t *testing.T) {
	t.Parallel()
	now := time.Now()
	cn := &mqttConn{issued: now, expiry: now.Add(time.Hour)}
	if got := renewalStart(cn).Sub(now); got != 30*time.Minute {
		t.Errorf("renewal starts after %v, want 30m", got)
	}
	if got := renewalDeadline(cn).Sub(now); got != 54*time.Minute {
		t.Errorf("renewal deadline after %v, want 54m", got)
	}
}

// TestDesiredOrdering feeds patches to onDesired out of order: the next
// version is delivered, stale and duplicate ones are dropped, and a gap
// triggers a full read (which fails here: the connection is gone, so the
// patch is delivered alone).
func TestDesiredOrdering(t *testing.T) {
	t.Parallel()
	var got []int
	var twins int
	c, err := New(Options{
		Identity:       testIdentity(t, "HostName=h;DeviceId=d;SharedAccessKey="+testKey),
		OnDesiredPatch: func(p json.RawMessage) { v, _ := desiredVersion(p); got = append(got, v) },
		OnTwin:         func(json.RawMessage) { twins++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	cn := &mqttConn{lost: make(chan struct{}), pending: map[string]chan twinResponse{}}
	cn.markLost(errConnLost)
	c.twinMu.Lock()
	c.deliverTwinLocked(cn, json.RawMessage(`{"$version":3}`))
	c.twinMu.Unlock()
	for _, v := range []int{4, 4, 3, 5, 7, 6, 8} {
		c.onDesired(cn, []byte(`{"x":1,"$version":`+strconv.Itoa(v)+`}`))
	}
	if want := []int{4, 5, 7, 8}; !equalInts(got, want) || twins != 1 {
		t.Errorf("delivered %v (twins %d), want %v (twins 1)", got, twins, want)
	}
	// An older full twin from the same connection does not roll back a newer patch...
	c.twinMu.Lock()
	c.deliverTwinLocked(cn, json.RawMessage(`{"$version":6}`))
	c.twinMu.Unlock()
	if twins != 1 {
		t.Errorf("stale full twin delivered")
	}
	// ...but a new connection's twin is always delivered (versions may restart).
	cn2 := &mqttConn{lost: make(chan struct{})}
	c.twinMu.Lock()
	c.deliverTwinLocked(cn2, json.RawMessage(`{"$version":1}`))
	c.twinMu.Unlock()
	if twins != 2 {
		t.Errorf("new connection's twin not delivered")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestUpdateReportedValidation(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 5*time.Second)
	c, err := New(Options{Identity: testIdentity(t, "HostName=h;DeviceId=d;SharedAccessKey="+testKey)})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{``, `[]`, `1`, `{`, `{"a":"` + strings.Repeat("x", maxReported) + `"}`} {
		if _, err := c.UpdateReported(ctx, json.RawMessage(p)); err == nil || errors.Is(err, ErrNotConnected) {
			t.Errorf("UpdateReported(%.20s) = %v, want a validation error", p, err)
		}
	}
	if _, err := c.UpdateReported(ctx, json.RawMessage(`{"a":1}`)); !errors.Is(err, ErrNotConnected) {
		t.Errorf("UpdateReported before Run = %v, want ErrNotConnected", err)
	}
	if _, _, err := c.GetTwin(ctx); !errors.Is(err, ErrNotConnected) {
		t.Errorf("GetTwin before Run = %v, want ErrNotConnected", err)
	}
	if c.Connected() {
		t.Error("Connected before Run")
	}
}

func TestRunTwice(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := New(Options{Identity: testIdentity(t, "HostName=127.0.0.1;DeviceId=d;SharedAccessKey="+testKey), Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Run(ctx); err != nil {
		t.Fatalf("Run with a done context = %v", err)
	}
	if err := c.Run(ctx); err == nil {
		t.Fatal("second Run succeeded")
	}
}

// TestProxyIgnoredWarning: with the mqtt transport and a proxy configured
// for the hub's host, New says once that the proxy is not used; mqttws and
// no proxy say nothing.
func TestProxyIgnoredWarning(t *testing.T) {
	t.Parallel()
	id := testIdentity(t, "HostName=h.example;DeviceId=d;SharedAccessKey="+testKey)
	proxy := func(*http.Request) (*url.URL, error) { return url.Parse("http://user:pw@proxy.lan:3128") }
	none := func(*http.Request) (*url.URL, error) { return nil, nil }
	for _, tt := range []struct {
		transport string
		proxy     func(*http.Request) (*url.URL, error)
		want      bool
	}{
		{TransportMQTT, proxy, true},
		{TransportMQTTWS, proxy, false},
		{TransportMQTT, none, false},
	} {
		var buf bytes.Buffer
		_, err := New(Options{Identity: id, Transport: tt.transport, Proxy: tt.proxy, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Contains(buf.String(), "does not use it")
		if got != tt.want {
			t.Errorf("%s: warned %v, want %v: %s", tt.transport, got, tt.want, buf.String())
		}
		if strings.Contains(buf.String(), "pw@") {
			t.Errorf("the proxy's password is in the log: %s", buf.String())
		}
	}
}
