package tests

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

// hostileToken is the token in hostile payloads; it must never come back.
const hostileToken = "SECRET-HOSTILE-TOKEN-9f2c"

// TestHostileTunnelOpen sends tunnelOpen payloads an attacker with method
// access could craft, through IoT Hub (the emulator) to the real module. The
// module allows only 127.0.0.1 as remote host. Every call must be answered
// with the right status and the AVA error body, the module must survive all
// of them, and none may open a connection: the honeypot cloud session the
// payloads point at sees no attempt and the camera no new connection.
func TestHostileTunnelOpen(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{env: []string{"RTSPTUNNEL_ALLOWEDREMOTEHOSTS=127.0.0.1"}})
	honeypot, err := c.cloud.NewSession(hostileToken)
	if err != nil {
		t.Fatal(err)
	}
	h := honeypot.URL()
	u, _ := url.Parse(h)
	hostPort, path := u.Host, u.Path
	camConns := c.cam.Conns()

	obj := func(endpoint, tok, port any) string {
		m := map[string]any{}
		if endpoint != nil {
			m["remoteEndpoint"] = endpoint
		}
		if tok != nil {
			m["remoteAuthorizationToken"] = tok
		}
		if port != nil {
			m["localPort"] = port
		}
		return mustJSON(m)
	}
	raw := func(port string) string { // localPort as literal JSON text
		return `{"remoteEndpoint":` + mustJSON(h) + `,"remoteAuthorizationToken":"` + hostileToken + `","localPort":` + port + `}`
	}
	ep := func(s string) string { return obj(s, hostileToken, 554) }
	tk := func(tok any) string { return obj(h, tok, 554) }
	nested := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)

	type tc struct {
		name    string
		payload string
		status  int    // the module's status; 0: refused by IoT Hub itself
		target  string // "" = any non-empty
	}
	cases := []tc{
		// Not an object.
		{"null", `null`, 400, "payload"},
		{"empty array", `[]`, 400, "payload"},
		{"array of a good request", `[` + ep(h) + `]`, 400, "payload"},
		{"string", `"` + h + `"`, 400, "payload"},
		{"number", `554`, 400, "payload"},
		{"true", `true`, 400, "payload"},
		{"nested 5000 deep", nested, 400, "payload"},
		// Missing fields, wrong case.
		{"empty object", `{}`, 400, "remoteEndpoint"},
		{"only endpoint", obj(h, nil, nil), 400, "remoteAuthorizationToken"},
		{"no port", obj(h, hostileToken, nil), 400, "localPort"},
		{"keys in another case", `{"RemoteEndpoint":` + mustJSON(h) + `,"RemoteAuthorizationToken":"x","LocalPort":554}`, 400, "remoteEndpoint"},
		// Wrong types.
		{"endpoint number", ep2(obj, 123), 400, "remoteEndpoint"},
		{"endpoint object", ep2(obj, map[string]any{"url": h}), 400, "remoteEndpoint"},
		{"endpoint array", ep2(obj, []string{h}), 400, "remoteEndpoint"},
		{"endpoint null", `{"remoteEndpoint":null,"remoteAuthorizationToken":"x","localPort":554}`, 400, "remoteEndpoint"},
		{"token number", tk(12345), 400, "remoteAuthorizationToken"},
		{"token null", `{"remoteEndpoint":` + mustJSON(h) + `,"remoteAuthorizationToken":null,"localPort":554}`, 400, "remoteAuthorizationToken"},
		{"token object", tk(map[string]string{"bearer": hostileToken}), 400, "remoteAuthorizationToken"},
		{"port string", raw(`"554"`), 400, "localPort"},
		{"port float", raw(`554.0`), 400, "localPort"},
		{"port exponent", raw(`5.54e2`), 400, "localPort"},
		{"port true", raw(`true`), 400, "localPort"},
		{"port null", raw(`null`), 400, "localPort"},
		{"port array", raw(`[554]`), 400, "localPort"},
		{"port huge", raw(`99999999999999999999999999`), 400, "localPort"},
		{"port 1e400", raw(`1e400`), 400, "localPort"},
		// Ports.
		{"port 0", raw(`0`), 400, "localPort"},
		{"port -1", raw(`-1`), 400, "localPort"},
		{"port 65536", raw(`65536`), 400, "localPort"},
		{"port unmapped", raw(`555`), 400, "localPort:555"},
		{"port 65535 unmapped", raw(`65535`), 400, "localPort:65535"},
		// Schemes and URL shapes.
		{"ws scheme", ep("ws://" + hostPort + path), 400, "remoteEndpoint"},
		{"http scheme", ep("http://" + hostPort + path), 400, "remoteEndpoint"},
		{"https scheme", ep("https://" + hostPort + path), 400, "remoteEndpoint"},
		{"file scheme", ep("file:///etc/passwd"), 400, "remoteEndpoint"},
		{"javascript", ep("javascript:alert(1)"), 400, "remoteEndpoint"},
		{"opaque wss", ep("wss:" + hostPort + path), 400, "remoteEndpoint"},
		{"scheme-relative", ep("//" + hostPort + path), 400, "remoteEndpoint"},
		{"relative", ep(path), 400, "remoteEndpoint"},
		{"empty", ep(""), 400, "remoteEndpoint"},
		{"no host", ep("wss:///tunnels/x"), 400, "remoteEndpoint"},
		{"bad port", ep("wss://127.0.0.1:99999/x"), 400, "remoteEndpoint"},
		{"port zero in URL", ep("wss://127.0.0.1:0/x"), 400, "remoteEndpoint"},
		{"space in path", ep(h + " x"), 400, "remoteEndpoint"},
		{"non-ASCII path", ep(h + "/é"), 400, "remoteEndpoint"},
		{"control character", ep("wss://127.0.0.1/\x00x"), 400, "remoteEndpoint"},
		{"trailing dot", ep("wss://127.0.0.1.:" + u.Port() + path), 400, "remoteEndpoint"},
		// User info: a classic way to make a URL look like another host.
		{"user info", ep("wss://user:pass@" + hostPort + path), 400, "remoteEndpoint"},
		{"user info host lookalike", ep("wss://evil.example.com@" + hostPort + path), 400, "remoteEndpoint"},
		{"fragment", ep(h + "#@evil.example.com"), 400, "remoteEndpoint"},
		{"backslash", ep("wss://" + hostPort + "\\@evil.example.com" + path), 400, "remoteEndpoint"},
		// Hosts outside allowedRemoteHosts (SSRF).
		{"other host", ep("wss://evil.example.com/x"), 400, "remoteEndpoint"},
		{"localhost", ep("wss://localhost:" + u.Port() + path), 400, "remoteEndpoint"},
		{"other loopback", ep("wss://127.0.0.2:" + u.Port() + path), 400, "remoteEndpoint"},
		{"ipv6 loopback", ep("wss://[::1]:" + u.Port() + path), 400, "remoteEndpoint"},
		{"decimal ip", ep("wss://2130706433:" + u.Port() + path), 400, "remoteEndpoint"},
		{"short ip", ep("wss://127.1:" + u.Port() + path), 400, "remoteEndpoint"},
		{"octal ip", ep("wss://0177.0.0.1:" + u.Port() + path), 400, "remoteEndpoint"},
		{"metadata service", ep("wss://169.254.169.254/latest/meta-data"), 400, "remoteEndpoint"},
		{"dns rebinding name", ep("wss://127.0.0.1.nip.io:" + u.Port() + path), 400, "remoteEndpoint"},
		{"percent-encoded host", ep("wss://%31%32%37.0.0.1:" + u.Port() + path), 400, "remoteEndpoint"},
		{"unicode host", ep("wss://ехаmple.com/x"), 400, "remoteEndpoint"},
		{"punycode host", ep("wss://xn--80ak6aa92e.com/x"), 400, "remoteEndpoint"},
		{"duplicate key, last wins", `{"remoteEndpoint":` + mustJSON(h) + `,"remoteEndpoint":"wss://evil.example.com/x","remoteAuthorizationToken":"x","localPort":554}`, 400, "remoteEndpoint"},
		// Tokens: header injection and size.
		{"token CRLF", tk(hostileToken + "\r\nX-Injected: 1"), 400, "remoteAuthorizationToken"},
		{"token LF", tk(hostileToken + "\nX-Injected: 1"), 400, "remoteAuthorizationToken"},
		{"token space", tk("Bearer " + hostileToken), 400, "remoteAuthorizationToken"},
		{"token NUL", tk(hostileToken + "\x00"), 400, "remoteAuthorizationToken"},
		{"token unicode", tk(hostileToken + "é"), 400, "remoteAuthorizationToken"},
		{"token empty", tk(""), 400, "remoteAuthorizationToken"},
		{"token 20 KB", tk(hostileToken + strings.Repeat("A", 20<<10)), 400, "remoteAuthorizationToken"},
		// Sizes: long fields, and IoT Hub's 128 KB request limit.
		{"endpoint 5 KB", ep("wss://127.0.0.1/" + strings.Repeat("a", 5000)), 400, "remoteEndpoint"},
		{"endpoint 100 KB", ep("wss://127.0.0.1/" + strings.Repeat("a", 100<<10)), 400, "remoteEndpoint"},
		{"127 KB payload, bad token", `{"pad":"` + strings.Repeat("x", 127<<10-200) + `","remoteEndpoint":` + mustJSON(h) + `,"remoteAuthorizationToken":"a\r\nb","localPort":554}`, 400, "remoteAuthorizationToken"},
		{"over 128 KB", `{"pad":"` + strings.Repeat("x", 128<<10) + `","remoteEndpoint":` + mustJSON(h) + `,"remoteAuthorizationToken":"` + hostileToken + `","localPort":554}`, 0, ""},
	}

	// Several callers at once, as an attacker would.
	var wg sync.WaitGroup
	var next atomic.Int64
	type answer struct {
		status int
		body   json.RawMessage
		err    error
	}
	answers := make([]answer, len(cases))
	for range 4 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(cases); i = int(next.Add(1)) - 1 {
				st, b, err := c.emu.InvokeMethod(ctx, edgeDevice, moduleID, "tunnelOpen", json.RawMessage(cases[i].payload), 30*time.Second)
				answers[i] = answer{st, b, err}
			}
		})
	}
	wg.Wait()

	for i, tc := range cases {
		a := answers[i]
		if tc.status == 0 {
			var he *emulator.HubError
			if !errors.As(a.err, &he) || he.Status != 400 || !strings.Contains(he.Message, "131072") {
				t.Errorf("%s: got %d %s, %v; want IoT Hub's 400 (payload over 128 KB)", tc.name, a.status, a.body, a.err)
			} else {
				t.Logf("%s: the caller gets IoT Hub's %d %s %q", tc.name, he.Status, he.Name, he.Message)
			}
			continue
		}
		if a.err != nil {
			t.Errorf("%s: %v", tc.name, a.err)
			continue
		}
		var b struct{ Code, Target, Message string }
		if a.status != tc.status || json.Unmarshal(a.body, &b) != nil || b.Code != itoa(tc.status) || b.Message == "" || b.Target == "" {
			t.Errorf("%s: answered %d %.300s; want %d with the AVA body", tc.name, a.status, a.body, tc.status)
			continue
		}
		if tc.target != "" && b.Target != tc.target {
			t.Errorf("%s: target %q, want %q (%s)", tc.name, b.Target, tc.target, b.Message)
		}
		if len(a.body) > 1024 {
			t.Errorf("%s: %d-byte answer echoes the input", tc.name, len(a.body))
		}
		if bytes.Contains(a.body, []byte(hostileToken)) || bytes.Contains(a.body, []byte("pass")) {
			t.Errorf("%s: the answer leaks a secret: %s", tc.name, a.body)
		}
	}

	if n := honeypot.Attempts(); n != 0 {
		t.Errorf("the honeypot endpoint saw %d connection attempts, want 0", n)
	}
	if n := c.cam.Conns() - camConns; n != 0 {
		t.Errorf("the camera saw %d new connections, want 0", n)
	}
	select {
	case <-c.module.Done():
		t.Fatalf("the module exited: %s", c.module.Output())
	default:
	}
	if strings.Contains(c.module.Output(), hostileToken) {
		t.Error("a token reached the module's logs")
	}
	moduleCases := 0
	for _, tc := range cases {
		if tc.status != 0 {
			moduleCases++
		}
	}
	rep := c.waitReported(ctx, "every refusal counted", func(rep map[string]any) bool {
		sum, _ := rep["summary"].(map[string]any)
		return sum["failed"] == float64(moduleCases)
	})
	if s := mustJSON(rep); strings.Contains(s, hostileToken) || len(s) > 32<<10 {
		t.Errorf("reported properties leak a token or exceed 32 KB (%d bytes)", len(s))
	}
	sum, _ := rep["summary"].(map[string]any)
	t.Logf("%d hostile payloads answered; reported summary: failed %v, lastError %q", len(cases), sum["failed"], sum["lastError"])
	// Still serving.
	s, _ := c.openTunnel(ctx, token)
	mustPlay(t, ctx, rtspURL(s), "after the hostile payloads")
}

// ep2 builds a payload whose remoteEndpoint is v (any JSON type).
func ep2(obj func(endpoint, tok, port any) string, v any) string { return obj(v, hostileToken, 554) }

// TestRemoteTLSVerification points the module at an endpoint whose
// certificate does not verify (the module was not given its CA): tunnelOpen
// answers 502 without an HTTP request ever reaching the endpoint, and the
// camera connection is closed again.
func TestRemoteTLSVerification(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{env: []string{"RTSPTUNNEL_REMOTECAFILE="}})
	s, err := c.cloud.NewSession(token)
	if err != nil {
		t.Fatal(err)
	}
	status, raw := c.invoke(ctx, "tunnelOpen", openPayload{s.URL() + "?sig=QUERYSECRET", token, 554})
	var b struct{ Code, Target, Message string }
	if status != 502 || json.Unmarshal(raw, &b) != nil || b.Code != "502" || b.Target != s.URL() {
		t.Errorf("untrusted certificate: %d %s; want 502 with target %s", status, raw, s.URL())
	}
	if n := s.Attempts(); n != 0 {
		t.Errorf("%d HTTP requests reached the untrusted endpoint", n)
	}
	testutil.WaitUntil(t, ctx, "the camera connection closed", func() bool { return c.cam.ActiveConns() == 0 })
	line := waitLog(t, ctx, c.module, "session open failed", nil)
	t.Logf("untrusted certificate: %d %s; log error %q", status, raw, line["error"])
	if !strings.Contains(mustJSON(line), "certificate") {
		t.Errorf("the log line does not say why: %v", line)
	}
	if strings.Contains(c.module.Output(), "QUERYSECRET") || strings.Contains(string(raw), "QUERYSECRET") {
		t.Error("the endpoint's query string leaked")
	}
}

// TestSecretsNeverLeak runs the whole system, relay included, through
// successful and failed sessions, then looks for every secret in everything an
// operator or another tenant can read: the module's, the relay's and the
// emulator's logs, the module twin, both metrics endpoints and the method
// answers. Secrets: the module's SAS key, the service policy key, SAS tokens,
// the relay's session tokens, tokens given to tunnelOpen and a signed query
// string.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var emuLog testutil.LogBuffer
	rc := newRelayChain(t, ctx, relayOptions{recordHub: true, emu: emulator.Options{
		Logger: emuLog.Logger(),
	}})
	c := rc.chain

	// Through the relay: a good session.
	mustPlay(t, ctx, rc.ready.Camera("cam1"), "through the relay")
	// Direct tunnelOpen calls: good, wrong token (401 from the cloud), a
	// signed query string, an injection attempt.
	s, _ := c.openTunnel(ctx, token)
	if p, err := harness.FFProbe(ctx, rtspURL(s), time.Second); err != nil || p.Packets < 10 {
		t.Fatalf("direct tunnel: %d packets, %v", p.Packets, err)
	}
	s2, _ := c.cloud.NewSession(token)
	var answers []string
	for _, p := range []openPayload{
		{s2.URL(), "wrong-" + token, 554},
		{s2.URL() + "?sig=QUERYSECRET&se=1", "wrong2-" + token, 554},
		{s2.URL(), token + "\r\nX: y", 554},
	} {
		_, body := c.invoke(ctx, "tunnelOpen", p)
		answers = append(answers, string(body))
	}
	relayTokens := []string{}
	for _, call := range rc.hub.recorded() {
		relayTokens = append(relayTokens, call.RemoteAuthorizationToken)
	}
	if len(relayTokens) == 0 {
		t.Fatal("no relay session token recorded")
	}
	testutil.WaitUntil(t, ctx, "the relay's session to close", func() bool {
		return metricValue(rc.relayMetrics(ctx), `relay_sessions_total{camera="cam1",outcome="ok"}`) == 1
	})

	// The secrets.
	var moduleKey []byte
	for _, id := range c.emu.Identities() {
		if id.DeviceID == edgeDevice && id.ModuleID == moduleID {
			moduleKey = id.Key
		}
	}
	_, policyKey, _ := strings.Cut(c.emu.ServiceConnectionString(), "SharedAccessKey=")
	secrets := map[string]string{
		"module SAS key":               base64.StdEncoding.EncodeToString(moduleKey),
		"module SAS key (url-escaped)": url.QueryEscape(base64.StdEncoding.EncodeToString(moduleKey)),
		"service policy key":           policyKey,
		"a SAS token":                  "SharedAccessSignature sr=",
		"a SAS signature":              "&sig=",
		"the tunnelOpen token":         token,
		"the signed query string":      "QUERYSECRET",
	}
	for i, tok := range relayTokens {
		secrets["relay session token "+itoa(i)] = tok
	}
	desired, reported, err := c.emu.Twin(edgeDevice, moduleID)
	if err != nil {
		t.Fatal(err)
	}
	places := map[string]string{
		"module logs":      c.module.Output(),
		"relay logs":       rc.relay.Output(),
		"emulator logs":    emuLog.String(),
		"twin":             string(desired) + string(reported),
		"module metrics":   c.scrape(ctx),
		"relay metrics":    rc.relayMetrics(ctx),
		"method answers":   strings.Join(answers, "\n"),
		"relay ready line": mustJSON(rc.ready),
	}
	for where, text := range places {
		for what, secret := range secrets {
			if secret != "" && strings.Contains(text, secret) {
				i := strings.Index(text, secret)
				t.Errorf("%s appears in the %s: ...%s...", what, where, text[max(0, i-80):min(len(text), i+len(secret)+20)])
			}
		}
	}
	t.Logf("searched %d places (%d bytes) for %d secrets", len(places), func() int {
		n := 0
		for _, s := range places {
			n += len(s)
		}
		return n
	}(), len(secrets))
}

// TestReportedSizeAtMaxSessions opens the maximum number of sessions (200
// here) and checks that the reported properties stay under IoT Hub's 32 KB
// (the emulator enforces it), listing what fits and counting the rest, and
// that the next open gets 429 without connecting anywhere.
func TestReportedSizeAtMaxSessions(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const max = 200
	c := newChain(t, ctx, chainOptions{noStart: true})
	cam := newTCPServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	c.startModule(ctx, `RTSPTUNNEL_TARGETS={"554":"`+cam.addr()+`"}`, "RTSPTUNNEL_MAXSESSIONS="+itoa(max), "RTSPTUNNEL_LOGLEVEL=warn")

	var wg sync.WaitGroup
	var next atomic.Int64
	for range 8 {
		wg.Go(func() {
			for next.Add(1) <= max && ctx.Err() == nil {
				c.open(ctx, 554, "")
			}
		})
	}
	wg.Wait()
	rep := c.waitReported(ctx, "every session active", func(rep map[string]any) bool {
		sum, _ := rep["summary"].(map[string]any)
		return sum["active"] == float64(max)
	})
	_, reported, _ := c.emu.Twin(edgeDevice, moduleID)
	var compact bytes.Buffer
	json.Compact(&compact, reported)
	sessions, _ := rep["sessions"].(map[string]any)
	sum := rep["summary"].(map[string]any)
	t.Logf("%d sessions open: reported properties %d bytes, %d sessions listed, summary %v", max, compact.Len(), len(sessions), sum)
	if compact.Len() >= 32<<10 {
		t.Errorf("reported properties are %d bytes, IoT Hub's limit is 32 KB", compact.Len())
	}
	if omitted, _ := sum["omitted"].(float64); len(sessions)+int(omitted) != max || (omitted > 0) != (sum["truncated"] == true) {
		t.Errorf("%d listed + %v omitted (truncated %v), want %d in all", len(sessions), sum["omitted"], sum["truncated"], max)
	}

	s, err := c.cloud.NewSession(token)
	if err != nil {
		t.Fatal(err)
	}
	status, raw := c.invoke(ctx, "tunnelOpen", openPayload{s.URL(), token, 554})
	if status != 429 || !strings.Contains(string(raw), `"code":"429"`) || s.Attempts() != 0 {
		t.Errorf("open number %d: %d %s (%d connects), want 429 and none", max+1, status, raw, s.Attempts())
	}
	if n := cam.active.Load(); n != max {
		t.Errorf("camera connections %d, want %d", n, max)
	}
}
