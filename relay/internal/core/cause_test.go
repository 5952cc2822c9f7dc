package core

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

// TestModuleCause: the module's error answers map to a bounded cause label;
// the text logged is the module's message, without control characters.
func TestModuleCause(t *testing.T) {
	ws := func(cause string) string {
		b, _ := json.Marshal(map[string]string{"code": "502", "target": "wss://relay.example.com/tunnels/x",
			"message": "Could not open the websocket to remoteEndpoint: " + cause})
		return string(b)
	}
	for _, tc := range []struct {
		status int
		body   string
		cause  string
	}{
		{502, ws("the proxy refused CONNECT: 407 Proxy Authentication Required (check the credentials in HTTPS_PROXY)"), CauseProxyAuth},
		{502, ws("the proxy refused CONNECT: 403 Forbidden"), CauseProxyRefused},
		{502, ws("could not connect to the proxy: connection refused"), CauseProxyUnreachable},
		{502, ws("TLS certificate verification failed: x509: certificate signed by unknown authority"), CauseTLS},
		{502, ws("the websocket handshake timed out (handshakeTimeout or openTimeout)"), CauseTimeout},
		{502, ws("DNS lookup of relay.example.com failed: no such host"), CauseDNS},
		{502, ws("the endpoint refused the connection"), CauseRefused},
		{401, ws("the endpoint answered HTTP 401 Unauthorized"), CauseHTTPStatus},
		{502, ws("the endpoint's answer was not a websocket handshake"), CauseHandshake},
		{502, ws("network error: connection reset by peer"), CauseNetwork},
		{502, `{"code":"502","target":"wss://x/","message":"Could not open the websocket to remoteEndpoint"}`, CauseOther}, // an older module
		{403, `{"code":"403","target":"wss://x/","message":"Could not open the websocket to remoteEndpoint"}`, CauseHTTPStatus},
		{400, `{"code":"400","target":"remoteEndpoint","message":"Remote host \"127.0.0.1\" is a loopback address; only a host named exactly in allowedRemoteHosts may be one"}`, CauseAddress},
		{400, `{"code":"400","target":"10.0.0.9:554","message":"Could not connect to RTSP endpoint"}`, CauseCamera},
		{429, `{"code":"429","target":"10.0.0.9:554","message":"Too many sessions: the limit is 100"}`, CauseLimit},
		{503, `{"code":"503","target":"10.0.0.9:554","message":"The module is shutting down"}`, CauseShuttingDown},
		{400, `{"code":"400","target":"localPort","message":"localPort must be an integer from 1 to 65535"}`, CauseBadRequest},
		{500, `not json`, CauseOther},
		{500, ``, CauseOther},
	} {
		cause, text := moduleCause(tc.status, []byte(tc.body))
		if cause != tc.cause {
			t.Errorf("moduleCause(%d, %s) = %q, want %q", tc.status, tc.body, cause, tc.cause)
		}
		var b struct{ Message string }
		json.Unmarshal([]byte(tc.body), &b)
		if text != b.Message {
			t.Errorf("text %q, want the message %q", text, b.Message)
		}
	}
	if _, text := moduleCause(502, []byte(`{"message":"a\r\nforged: line\u001b[31m`+strings.Repeat("x", 1000)+`"}`)); strings.ContainsAny(text, "\r\n\x1b") || len(text) > maxCauseText+3 {
		t.Errorf("text %q is not cleaned and bounded", text)
	}
}

// TestModuleCauseLoggedAndCounted: a module behind a proxy that refuses
// CONNECT answers 502 with the cause; the relay logs it on the session's
// line and counts it in relay_module_open_failures_total (issue 14 item 9).
func TestModuleCauseLoggedAndCounted(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	const msg = "Could not open the websocket to remoteEndpoint: the proxy refused CONNECT: 407 Proxy Authentication Required (check the credentials in HTTPS_PROXY)"
	h := newHarness(t, func(context.Context, string, OpenRequest) (OpenResult, error) {
		b, _ := json.Marshal(map[string]string{"code": "502", "target": "wss://relay.example.com/tunnels/x", "message": msg})
		return OpenResult{502, b}, nil
	}, nil)
	if n := promtest.CollectAndCount(h.srv.Metrics.ModuleOpenFailures); n != len(Causes) {
		t.Fatalf("%d series before any failure, want %d (one per cause)", n, len(Causes))
	}
	player, done := h.play(ctx, "cam1")
	go player.Write([]byte(options))
	readAll(ctx, player)
	testutil.Wait(ctx, t, done, "HandlePlayer")
	closed := h.logs.Records("session closed")
	if len(closed) != 1 {
		t.Fatalf("%d session closed lines:\n%s", len(closed), h.logs)
	}
	if r, _ := closed[0]["reason"].(string); !strings.Contains(r, "(proxy_auth): "+msg) {
		t.Errorf("reason %q lacks the cause", r)
	}
	for _, c := range Causes {
		want := 0.0
		if c == CauseProxyAuth {
			want = 1
		}
		if got := promtest.ToFloat64(h.srv.Metrics.ModuleOpenFailures.WithLabelValues(c)); got != want {
			t.Errorf("relay_module_open_failures_total{cause=%q} = %v, want %v", c, got, want)
		}
	}
}

// TestReadmeNamesEveryCause: relay/README.md's metrics table names every
// cause label.
func TestReadmeNamesEveryCause(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "| `relay_module_open_failures_total` |") {
			row = l
		}
	}
	for _, c := range Causes {
		if !strings.Contains(row, " "+c+",") && !strings.Contains(row, " "+c+":") {
			t.Errorf("README's relay_module_open_failures_total row does not name the cause %s", c)
		}
	}
}
