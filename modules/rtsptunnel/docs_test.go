package main

// Docs tests: the README's reference sections are generated from the code and
// checked here, so that they cannot drift from it. Each generated section
// sits between <!-- NAME:begin --> and <!-- NAME:end --> markers; when one is
// stale the test fails, and
//
//	go test ./modules/rtsptunnel -run Docs -update
//
// rewrites it. The sections:
//
//	settings    every setting, from settings.Fields()
//	metrics     every metric, from the metrics package's own registry
//	tunnelopen  tunnelOpen answers, from real calls to the session manager
//	reported    a reported-properties patch, from the reporter

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/app"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/hub"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/identity"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/report"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/session"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/tunnel"
)

var update = flag.Bool("update", false, "rewrite the generated sections of README.md")

var readmePath = filepath.Join(repoRoot, "README.md")

func readREADME(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkSection compares the README's section name with want, or rewrites it
// with -update.
func checkSection(t *testing.T, name, want string) {
	t.Helper()
	begin, end := "<!-- "+name+":begin -->\n", "<!-- "+name+":end -->"
	readme := readREADME(t)
	i := strings.Index(readme, begin)
	j := strings.Index(readme, end)
	if i < 0 || j < i {
		t.Fatalf("README.md has no %q ... %q markers", strings.TrimSpace(begin), end)
	}
	got := readme[i+len(begin) : j]
	if got == want {
		return
	}
	if *update {
		readme = readme[:i+len(begin)] + want + readme[j:]
		if err := os.WriteFile(readmePath, []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("README.md: rewrote the %s section", name)
		return
	}
	t.Errorf("README.md: the %s section is stale; run: go test ./modules/rtsptunnel -run Docs -update\n--- want:\n%s--- have:\n%s", name, want, got)
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// settingsTable renders settings.Fields() as a Markdown table.
func settingsTable() string {
	var b strings.Builder
	b.WriteString("| Environment variable | Desired property | Type | Default | Description |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, f := range settings.Fields() {
		twin := "`" + f.Name + "`"
		if !f.Writable {
			twin = "(environment only)"
		}
		typ := f.Type
		if l := limits(f.Accepts); l != "" {
			typ += ", " + l
		}
		def := "`" + f.Default + "`"
		if f.Default == "" {
			def = "`" + string(f.DefaultJSON) + "`"
			if string(f.DefaultJSON) == `""` {
				def = "(empty)"
			}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", f.Env, twin, cell(typ), cell(def), cell(f.Description))
	}
	return b.String()
}

// limits extracts the limits or allowed values from a Field.Accepts text.
func limits(accepts string) string {
	if v, ok := strings.CutPrefix(accepts, "expected one of "); ok {
		return "one of " + v
	}
	for _, sep := range []string{" each from ", " from ", " of at least ", " of at most "} {
		if i := strings.Index(accepts, sep); i >= 0 {
			return strings.TrimPrefix(strings.TrimSpace(accepts[i:]), "of ")
		}
	}
	return ""
}

func TestDocsSettings(t *testing.T) {
	checkSection(t, "settings", settingsTable())

	// Every setting is named in the README, also outside the generated table
	// is fine; the table alone guarantees it. The deployment template's
	// desired properties are checked against the same code in
	// TestPackagingDeploymentTemplates.
	readme := readREADME(t)
	for _, f := range settings.Fields() {
		if !strings.Contains(readme, "`"+f.Env+"`") || (f.Writable && !strings.Contains(readme, "`"+f.Name+"`")) {
			t.Errorf("README.md does not document the setting %s (%s)", f.Name, f.Env)
		}
	}
}

// TestDocsMentions checks names the README must use exactly as the code does.
func TestDocsMentions(t *testing.T) {
	readme := readREADME(t)
	names := []string{
		app.MethodTunnelOpen, hub.DefaultModelID,
		identity.EnvWorkloadURI, identity.EnvIoTHubHostName, identity.EnvGatewayHostName, identity.EnvDeviceID,
		identity.EnvModuleID, identity.EnvModuleGenerationID, identity.EnvAuthScheme,
		identity.EnvEdgeHubConnectionString, identity.EnvEdgeModuleCAFile,
		identity.EnvConnectionString, identity.EnvHubCAFile,
		"HTTPS_PROXY", "NO_PROXY", "TunnelConnectionSource: PnpDevice", "Authorization: Bearer",
		strings.Replace(tunnel.UserAgent("<version>"), "("+runtime.GOOS+"; "+runtime.GOARCH+")", "(<GOOS>; <GOARCH>)", 1),
		"Local port is not available", "Could not connect to RTSP endpoint",
		"/healthz", "/metrics",
	}
	for _, r := range tunnel.Reasons {
		names = append(names, string(r))
	}
	for _, r := range []session.FailReason{session.FailBadRequest, session.FailHostNotAllowed, session.FailPortNotAvailable,
		session.FailTooManySessions, session.FailShuttingDown, session.FailCameraUnreachable, session.FailRemote} {
		names = append(names, string(r))
	}
	for _, n := range names {
		if !strings.Contains(readme, n) {
			t.Errorf("README.md does not mention %q", n)
		}
	}

	// The Quick start stays exactly two commands.
	qs := regexp.MustCompile("(?s)## Quick start\n.*?```sh\n(.*?)```").FindStringSubmatch(readme)
	if qs == nil {
		t.Fatal("README.md has no Quick start section with a sh code block")
	}
	var cmds []string
	for _, l := range strings.Split(strings.TrimSpace(qs[1]), "\n") {
		cmds = append(cmds, strings.Fields(l)[0])
	}
	if !slices.Equal(cmds, []string{"scripts/demo.sh", "scripts/test.sh"}) {
		t.Errorf("Quick start runs %v, want exactly scripts/demo.sh and scripts/test.sh", cmds)
	}

	// Relative links point to files that exist.
	for _, m := range regexp.MustCompile(`\]\(([^)#:]+)(#[^)]*)?\)`).FindAllStringSubmatch(readme, -1) {
		if _, err := os.Stat(filepath.Join(repoRoot, m[1])); err != nil {
			t.Errorf("README.md links to %s: %v", m[1], err)
		}
	}
}

// metricsTable renders the module's metrics: every collector of the metrics
// package, exercised once so that labelled series exist.
func metricsTable(t *testing.T) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Options{IoTHub: "myhub.azure-devices.net", EdgeDevice: "edge1", Module: "rtsptunnel"})
	if err != nil {
		t.Fatal(err)
	}
	m.SessionOpened()
	m.SessionFailed(string(session.FailBadRequest))
	m.SessionClosed(string(tunnel.ReasonCameraClosed))
	m.ObserveOpenDuration(time.Second)
	m.MethodCall(app.MethodTunnelOpen, 200)
	m.SetHubConnected(true)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	// Every described metric must have been gathered, or it would be missing
	// from the table: exercise it above.
	descs := make(chan *prometheus.Desc, 100)
	m.Describe(descs)
	close(descs)
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		if n := fqName.FindStringSubmatch(d.String()); n == nil || byName[n[1]] == nil {
			t.Errorf("metric %s has no series in the docs test: record it in metricsTable", d)
		}
	}
	constLabels := map[string]bool{"iothub": true, "edge_device": true, "module_name": true}
	var b strings.Builder
	b.WriteString("| Metric | Type | Labels | Description |\n|---|---|---|---|\n")
	for _, f := range families {
		var labels []string
		if len(f.Metric) > 0 {
			for _, lp := range f.Metric[0].Label {
				if !constLabels[lp.GetName()] {
					labels = append(labels, "`"+lp.GetName()+"`")
				}
			}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f.GetName(), strings.ToLower(f.GetType().String()), strings.Join(labels, ", "), cell(f.GetHelp()))
	}
	return b.String()
}

func TestDocsMetrics(t *testing.T) {
	checkSection(t, "metrics", metricsTable(t))
}

// TestDocsTunnelOpen calls the real session manager with the README's example
// requests and writes what it answers into the README. The camera and the
// relay are local servers whose addresses are shown as 192.168.10.21:554 and
// wss://relay.example.com; 192.168.10.22:554 stands for a closed port.
func TestDocsTunnelOpen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The camera: accepts and holds connections.
	camera, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer camera.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := camera.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	deadCamera := testutil.FreeAddr(t)

	// The relay: /tunnels/7d3e9a upgrades, anything else is refused with 401.
	relay := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tunnels/7d3e9a" {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			if _, _, err := c.Read(r.Context()); err != nil {
				return
			}
		}
	}))
	defer relay.Close()
	caFile := testutil.WriteCertFile(t, "relay-ca.pem", relay.Certificate())
	relayURL := "wss://" + relay.Listener.Addr().String()
	deadRelayURL := "wss://" + testutil.FreeAddr(t)
	show := strings.NewReplacer(
		relayURL, "wss://relay.example.com",
		deadRelayURL, "wss://relay.example.com",
		camera.Addr().String(), "192.168.10.21:554",
		deadCamera, "192.168.10.22:554",
	)

	base := settings.Defaults()
	base.Targets = settings.Targets{554: camera.Addr().String(), 5541: deadCamera}
	base.AllowedRemoteHosts = []string{"relay.example.com", "127.0.0.1"}
	base.RemoteCAFile = caFile
	base.MaxSessions = 1
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	mgr := &session.Manager{Settings: base, Version: "docs"}
	if err := mgr.Initialize(); err != nil {
		t.Fatal(err)
	}
	noTargetSettings := settings.Defaults()
	noTargetSettings.AllowedRemoteHosts = base.AllowedRemoteHosts // the test relay is on loopback
	noTargets := &session.Manager{Settings: noTargetSettings, Version: "docs"}
	if err := noTargets.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer noTargets.Shutdown(ctx)
	anyHost := &session.Manager{Settings: settings.Defaults(), Version: "docs"} // allowedRemoteHosts empty
	if err := anyHost.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer anyHost.Shutdown(ctx)

	payload := func(endpoint, token string, port any) string {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.Encode(struct {
			RemoteEndpoint           string `json:"remoteEndpoint"`
			RemoteAuthorizationToken string `json:"remoteAuthorizationToken"`
			LocalPort                any    `json:"localPort"`
		}{endpoint, token, port})
		return strings.TrimSpace(b.String())
	}
	ok := relayURL + "/tunnels/7d3e9a"
	type call struct {
		what    string
		mgr     *session.Manager
		payload string
		status  int
	}
	calls := []call{
		{"empty payload", mgr, "", 400},
		{"not an object", mgr, `[554]`, 400},
		{"missing remoteEndpoint", mgr, `{"remoteAuthorizationToken":"<token>","localPort":554}`, 400},
		{"not wss://", mgr, payload("https://relay.example.com/tunnels/7d3e9a", "<token>", 554), 400},
		{"ws:// without allowInsecureWebSocket", mgr, payload("ws://relay.example.com/tunnels/7d3e9a", "<token>", 554), 400},
		{"host not in allowedRemoteHosts", mgr, payload("wss://elsewhere.example.net/tunnels/7d3e9a", "<token>", 554), 400},
		{"cloud metadata address (allowedRemoteHosts empty)", anyHost, payload("wss://169.254.169.254/latest/meta-data", "<token>", 554), 400},
		{"non-standard IPv4 form", anyHost, payload("wss://2130706433/tunnels/7d3e9a", "<token>", 554), 400},
		{"empty token", mgr, payload(ok, "", 554), 400},
		{"localPort not an integer", mgr, payload(ok, "<token>", "554"), 400},
		{"localPort not in targets", mgr, payload(ok, "<token>", 8554), 400},
		{"localPort not in allowedPorts (no targets)", noTargets, payload(ok, "<token>", 8554), 400},
		{"camera unreachable", mgr, payload(ok, "<token>", 5541), 400},
		{"websocket refused (token rejected)", mgr, payload(relayURL+"/tunnels/5c1f0b?sig=secret", "<token>", 554), 401},
		{"websocket unreachable", mgr, payload(deadRelayURL+"/tunnels/2a8d4c", "<token>", 554), 502},
		{"success", mgr, payload(ok, "<token>", 554), 200},
		{"maxSessions reached (1 in this example)", mgr, payload(ok, "<token>", 554), 429},
		{"shutting down", mgr, payload(ok, "<token>", 554), 503},
	}
	sessionID := regexp.MustCompile(`"sessionId":"[0-9a-f-]{36}"`)
	var b strings.Builder
	b.WriteString("| Case | Payload | Status | Body |\n|---|---|---|---|\n")
	for _, c := range calls {
		if c.status == 503 {
			if err := mgr.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
		}
		status, body := c.mgr.HandleTunnelOpen(ctx, []byte(c.payload))
		if status != c.status {
			t.Errorf("%s: status %d %s, want %d", c.what, status, body, c.status)
		}
		shownBody := sessionID.ReplaceAllString(show.Replace(string(body)), `"sessionId":"<uuid>"`)
		shownPayload := show.Replace(c.payload)
		if shownPayload == "" {
			shownPayload = "(empty)"
		} else {
			shownPayload = "`" + shownPayload + "`"
		}
		// The endpoint's query string (here ?sig=secret) never appears in an answer.
		if strings.Contains(string(body), "secret") {
			t.Errorf("%s: the answer %s contains the endpoint's query string", c.what, body)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | `%s` |\n", c.what, cell(shownPayload), status, cell(shownBody))
	}
	checkSection(t, "tunnelopen", b.String())
}

// fakeSource is a report.Source with a fixed snapshot.
type fakeSource struct{ snap session.Snapshot }

func (f fakeSource) Snapshot() session.Snapshot { return f.snap }
func (f fakeSource) Changed() <-chan struct{}   { return nil }

// TestDocsReported generates an example of the reported properties from the
// reporter: the full state it publishes after a (re)connect, with two
// writable-property acknowledgements.
func TestDocsReported(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	src := fakeSource{session.Snapshot{
		Sessions: []session.Info{
			{ID: "6f1c2b7e-0d7a-4c52-9a0e-3b8f5d2e1a90", State: session.StateOpen, RemoteHost: "relay.example.com",
				LocalPort: 554, Target: "192.168.10.21:554", Opened: at("2026-01-02T15:04:05Z"),
				BytesToRemote: 18734211, BytesToCamera: 5120},
			{ID: "0b9d4e21-5f3a-4a7c-8e6d-2c1b0a9f8e7d", State: session.StateClosed, RemoteHost: "relay.example.com",
				LocalPort: 5541, Target: "192.168.10.22:554", Opened: at("2026-01-02T14:58:00Z"), Closed: at("2026-01-02T15:03:30Z"),
				BytesToRemote: 40213377, BytesToCamera: 9216, CloseReason: string(tunnel.ReasonRemoteClosed), CloseCode: 1000},
		},
		Summary: session.Summary{Active: 1, Opened: 12, Failed: 1,
			LastError:   "Could not connect to RTSP endpoint: dial tcp 192.168.10.23:554: connect: no route to host",
			LastErrorAt: at("2026-01-02T13:20:11Z")},
	}}
	_, acks := settings.Defaults().Apply(json.RawMessage(`{"$version":7,"maxSessions":16,"idleTimeout":"10"}`))

	var patches []json.RawMessage
	r := &report.Reporter{
		Source: src,
		Publisher: report.PublisherFunc(func(_ context.Context, p json.RawMessage) error {
			patches = append(patches, p)
			return nil
		}),
	}
	r.Ack(acks)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(patches) == 0 {
		t.Fatal("the reporter published nothing")
	}
	var full bytes.Buffer
	if err := json.Indent(&full, patches[len(patches)-1], "", "  "); err != nil {
		t.Fatal(err)
	}
	var shown strings.Builder
	shown.WriteString("```json\n")
	shown.WriteString(full.String())
	shown.WriteString("\n```\n")
	checkSection(t, "reported", shown.String())

	// Keys the README explains in prose.
	var top map[string]json.RawMessage
	json.Unmarshal(patches[len(patches)-1], &top)
	keys := make([]string, 0, len(top))
	for k := range top {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !slices.Contains(keys, "sessions") || !slices.Contains(keys, "summary") {
		t.Errorf("reported patch keys %v: want sessions and summary", keys)
	}
}
