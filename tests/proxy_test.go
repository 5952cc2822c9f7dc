package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/tools/camerasim/camera"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

// The proxy test's network: the module's namespace ("edge") and the proxy's
// ("proxy") joined by one veth pair. Private addresses that exist only
// inside those two namespaces.
const (
	proxyIP    = "10.200.0.1"
	edgeIP     = "10.200.0.2"
	proxyPort  = 3128
	hubName    = "hub.test"   // the IoT Hub/edgeHub host name, known only to squid
	relayName  = "relay.test" // the relay's public host name, known only to squid
	proxyUser  = "edge"
	proxyPass  = "p@ss word:1" // percent-encoded in the proxy URL
	camRelayed = "cam"
)

// needNetNS skips the test when network namespaces cannot be made here
// (not root, no ip), and fails it in CI, which runs as root with
// scripts/setup.sh's packages.
func needNetNS(t *testing.T, tools ...string) {
	t.Helper()
	err := harness.NetNSUsable()
	if err == nil {
		for _, tool := range tools {
			if _, lerr := harness.LookSbin(tool); lerr != nil {
				err = lerr
				break
			}
		}
	}
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI must run this test: %v", err)
	}
	t.Skipf("skipped (it runs in CI): %v", err)
}

// proxyNet is the firewalled site: the module's namespace, whose only way
// out is squid in the proxy's namespace. The emulator, the relay and the
// camera stay on the test's loopback; plain forwarders stand in for the
// links (the edge LAN to the camera, the internet from squid to the
// cloud), so that squid really is the only road between the module and
// the cloud.
type proxyNet struct {
	edge, proxy *harness.NetNS
	squid       *harness.Squid
}

// newProxyNet makes the two namespaces and the veth pair, and closes the
// edge namespace with a firewall: out only to squid's port, in nothing
// that the edge did not ask for.
func newProxyNet(t *testing.T) *proxyNet {
	t.Helper()
	if gone := harness.SweepNetNS("rt-edge", "rt-proxy"); len(gone) > 0 {
		t.Logf("deleted namespaces that an earlier, killed run left: %v", gone)
	}
	pn := &proxyNet{}
	var err error
	if pn.edge, err = harness.NewNetNS("rt-edge"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pn.edge.Close(); err != nil {
			t.Errorf("deleting the edge namespace: %v", err)
		}
	})
	if pn.proxy, err = harness.NewNetNS("rt-proxy"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pn.proxy.Close(); err != nil {
			t.Errorf("deleting the proxy namespace: %v", err)
		}
	})
	if err := harness.Veth(pn.proxy, proxyIP+"/30", pn.edge, edgeIP+"/30"); err != nil {
		t.Fatal(err)
	}
	rules := `table inet rtsptunnel_site {
	chain output {
		type filter hook output priority 0; policy drop;
		oif "lo" accept
		ip daddr ` + proxyIP + ` tcp dport ` + strconv.Itoa(proxyPort) + ` accept
	}
	chain input {
		type filter hook input priority 0; policy drop;
		iif "lo" accept
		ct state established,related accept
	}
}
`
	nft, err := harness.LookSbin("nft")
	if err != nil {
		t.Fatal(err)
	}
	if err := pn.edge.Run([]byte(rules), nft, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	return pn
}

// forward serves addr inside ns (port 0 picks one) and pipes each
// connection to what dial returns.
func forward(t *testing.T, ns *harness.NetNS, addr string, dial func(ctx context.Context) (net.Conn, error)) *harness.Forwarder {
	t.Helper()
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f := harness.Forward(ln, dial)
	t.Cleanup(f.Close)
	return f
}

// dialTo dials addr from the test's own namespace.
func dialTo(addr string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// TestSquidInThePath runs the module in a namespace whose only way out is a
// real squid with Basic authentication, as on a site behind a firewall:
//
//	ffprobe -> relay (shared camera) --HTTPS_PROXY--> squid --> IoT Hub REST (emulator)
//	module (edge namespace) --mqttws via squid--> edgeHub (emulator)
//	module --wss via squid--> relay;  module --> camera (edge LAN)
//
// Video plays through the relay; squid's access log shows the module's two
// CONNECTs (hub and relay, authenticated) and the relay's own hub CONNECT.
// A tunnelOpen to the relay on a port squid refuses (as a stock squid
// refuses 8443) answers 502 with squid's cause (403), and so does one that
// squid refuses to this proxy user (407).
func TestSquidInThePath(t *testing.T) {
	needNetNS(t, "nft", "squid")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pn := newProxyNet(t)

	// Negative control: with the firewall in place, the edge reaches
	// nothing in the proxy's namespace but squid's port.
	other, err := pn.proxy.Listen("tcp", proxyIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	if c, err := pn.edge.DialContext(dctx, "tcp", other.Addr().String()); err == nil {
		c.Close()
		t.Fatalf("the edge reached %s past the firewall", other.Addr())
	}
	dcancel()
	// ... and nothing gets in: a service listening on the edge is out of
	// the proxy's reach.
	inside, err := pn.edge.Listen("tcp", edgeIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	dctx, dcancel = context.WithTimeout(ctx, 2*time.Second)
	if c, err := pn.proxy.DialContext(dctx, "tcp", inside.Addr().String()); err == nil {
		c.Close()
		t.Fatalf("the proxy's namespace reached %s inside the edge", inside.Addr())
	}
	dcancel()

	c := newChain(t, ctx, chainOptions{noStart: true, emu: emulator.Options{HubHostName: hubName}})
	hubPort := c.emu.HTTPSPort()

	// The cloud as squid sees it: hub.test and relay.test are 127.0.0.1 in
	// the proxy's namespace, where forwarders carry the connections to the
	// emulator and the relay on the test's loopback.
	forward(t, pn.proxy, "127.0.0.1:"+strconv.Itoa(hubPort), dialTo(c.emu.HTTPSAddr()))
	var relayWS atomic.Pointer[string] // the relay's websocket listener, once it is up
	dialRelay := func(ctx context.Context) (net.Conn, error) {
		addr := relayWS.Load()
		if addr == nil {
			return nil, errors.New("the relay is not up yet")
		}
		return dialTo(*addr)(ctx)
	}
	// Three doors to the same relay: one on a port squid allows, one on a
	// port it refuses, one that only another proxy user may reach.
	allowed := forward(t, pn.proxy, "127.0.0.1:0", dialRelay)
	refused := forward(t, pn.proxy, "127.0.0.1:0", dialRelay)
	otherUsers := forward(t, pn.proxy, "127.0.0.1:0", dialRelay)
	allowedPort, refusedPort, otherPort := port(t, allowed.Addr()), port(t, refused.Addr()), port(t, otherUsers.Addr())

	pn.squid = &harness.Squid{
		Dir:          filepath.Join(t.TempDir(), "squid"),
		Listen:       proxyIP + ":" + strconv.Itoa(proxyPort),
		Users:        map[string]string{proxyUser: proxyPass, "someone-else": "other password"},
		ConnectPorts: []int{hubPort, allowedPort, otherPort},
		PortUsers:    map[int][]string{otherPort: {"someone-else"}},
		Hosts:        map[string]string{hubName: "127.0.0.1", relayName: "127.0.0.1"},
		NetNS:        pn.proxy,
	}
	if err := pn.squid.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pn.squid.Stop)
	proxyURL := (&url.URL{Scheme: "http", User: url.UserPassword(proxyUser, proxyPass), Host: pn.squid.Listen}).String()

	// The relay, on the test's loopback, reaches IoT Hub through squid too.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	relayProxy := harness.Forward(ln, func(ctx context.Context) (net.Conn, error) {
		return pn.proxy.DialContext(ctx, "tcp", pn.squid.Listen)
	})
	t.Cleanup(relayProxy.Close)
	dir := t.TempDir()
	relayCA, cert, key := testutil.WriteCert(t, dir, "relay", testutil.Leaf{CommonName: "relay", DNSNames: []string{relayName}})
	relayBin := build(t, harness.Relay)
	relay, err := harness.Start(ctx, "relay", relayBin, []string{
		"--tls-cert", cert, "--tls-key", key,
		"--public-url", "wss://" + relayName + ":" + strconv.Itoa(allowedPort),
		"--allow-anonymous", "--ws-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--rtsp-listen", "127.0.0.1:0", "--log-level", "debug", "--method-timeout", "10s",
		"--camera", "name=" + camRelayed + ",deviceId=" + edgeDevice + ",moduleId=" + moduleID + ",localPort=554,rtspPath=" + strings.TrimPrefix(camera.DefaultPath, "/"),
	}, &harness.StartOptions{Env: append(proxyEnv((&url.URL{Scheme: "http", User: url.UserPassword(proxyUser, proxyPass), Host: relayProxy.Addr()}).String()),
		"IOTHUB_SERVICE_CONNECTION_STRING="+c.emu.ServiceConnectionString(),
		"IOTHUB_SERVICE_URL=https://"+hubName+":"+strconv.Itoa(hubPort),
		"IOTHUB_CA_FILE="+c.emu.CAFile(),
	), Echo: echoIfVerbose()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		relay.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("relay output:\n%s", relay.Output())
		}
	})
	ready, err := harness.WaitRelayReady(ctx, relay)
	if err != nil {
		t.Fatal(err)
	}
	relayWS.Store(&ready.WebsocketListen)

	// The camera on the edge LAN: the edge's own loopback, forwarded to the
	// simulator.
	cam := forward(t, pn.edge, "127.0.0.1:0", dialTo(c.cam.ListenAddr()))

	// The module, inside the edge namespace, with the IoT Edge environment
	// but edgeHub's name instead of an address (Go never proxies loopback
	// addresses, and on a real site edgeHub or IoT Hub has a name).
	bin := build(t, harness.Module)
	prog, args := pn.edge.Command(bin)
	env := append(c.moduleEnv(
		"IOTEDGE_GATEWAYHOSTNAME="+hubName,
		"RTSPTUNNEL_HUBTRANSPORT=mqttws",
		"RTSPTUNNEL_HUBPORT="+strconv.Itoa(hubPort),
		`RTSPTUNNEL_TARGETS={"554":"`+cam.Addr()+`"}`,
		"RTSPTUNNEL_REMOTECAFILE="+relayCA,
		"RTSPTUNNEL_METRICSADDR=",
		"RTSPTUNNEL_ALLOWEDREMOTEHOSTS="+relayName, // as an operator names the relay
	), proxyEnv(proxyURL)...)
	module, err := harness.Start(ctx, "rtsptunnel", prog, args, &harness.StartOptions{Env: env, Echo: echoIfVerbose()})
	if err != nil {
		t.Fatal(err)
	}
	c.module = module
	t.Cleanup(func() {
		module.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("module output:\n%s", module.Output())
			t.Logf("squid output:\n%s", pn.squid.Output())
		}
	})
	c.waitReady(ctx)
	if info, _ := c.emu.ConnInfo(edgeDevice, moduleID); !strings.Contains(strings.ToLower(info.Transport), "ws") {
		t.Errorf("the module connected over %q, want MQTT over WebSockets", info.Transport)
	}

	t.Run("video through the relay", func(t *testing.T) {
		u := "rtsp://" + ready.RTSPListen + "/" + camRelayed
		p, err := harness.FFProbe(ctx, u, 3*time.Second)
		if err != nil || p.Packets < 25 {
			t.Fatalf("through squid: %d packets, %v", p.Packets, err)
		}
		t.Logf("through squid: %d packets, %d keyframes", p.Packets, p.Keyframes)
	})

	// Refusals: the module answers 502 with squid's cause (no secret), the
	// twin's summary keeps the cause, squid logs the denial.
	for _, tc := range []struct {
		name   string
		port   int
		cause  string // in the answer's message and summary.lastError
		result string // squid's access log
	}{
		{"relay port refused", refusedPort, "the proxy refused CONNECT: 403 Forbidden", "TCP_DENIED/403"},
		{"proxy user not allowed", otherPort, "the proxy refused CONNECT: 407 Proxy Authentication Required", "TCP_DENIED/407"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := "wss://" + relayName + ":" + strconv.Itoa(tc.port) + "/tunnels/0123456789abcdef"
			status, body := c.invoke(ctx, "tunnelOpen", openPayload{endpoint, token, 554})
			var answer struct{ Code, Target, Message string }
			if err := json.Unmarshal(body, &answer); err != nil {
				t.Fatalf("answer %d %s: %v", status, body, err)
			}
			if status != 502 || answer.Code != "502" {
				t.Errorf("tunnelOpen answered %d %s, want 502", status, body)
			}
			if strings.Contains(string(body), token) || strings.Contains(string(body), proxyPass) {
				t.Errorf("the answer leaks a secret: %s", body)
			}
			if !strings.Contains(answer.Message, tc.cause) {
				t.Errorf("answer message %q does not say %q", answer.Message, tc.cause)
			}
			c.waitReported(ctx, "the cause in summary.lastError", func(rep map[string]any) bool {
				sum, _ := rep["summary"].(map[string]any)
				return strings.Contains(fmt.Sprint(sum["lastError"]), tc.cause)
			})
			t.Logf("%d %s", status, body)
			testutil.WaitUntil(t, ctx, "squid's log of the refusal", func() bool {
				return hasAccess(pn.squid.AccessLog(), edgeIP, "CONNECT", relayName+":"+strconv.Itoa(tc.port), tc.result, "")
			})
		})
	}

	// Squid logs a CONNECT when its tunnel ends: stop the module and the
	// relay, then read the log.
	if _, _, err := module.Stop(stopGrace); err != nil {
		t.Error(err)
	}
	relay.Stop(10 * time.Second)
	want := []struct {
		what, client, host string
	}{
		{"the module's MQTT-over-WebSockets CONNECT to the hub", edgeIP, hubName + ":" + strconv.Itoa(hubPort)},
		{"the module's tunnel CONNECT to the relay", edgeIP, relayName + ":" + strconv.Itoa(allowedPort)},
		{"the relay's IoT Hub REST CONNECT", proxyIP, hubName + ":" + strconv.Itoa(hubPort)},
	}
	for _, w := range want {
		testutil.WaitUntil(t, ctx, "squid's log of "+w.what, func() bool {
			return hasAccess(pn.squid.AccessLog(), w.client, "CONNECT", w.host, "TCP_TUNNEL/200", proxyUser)
		})
	}
	var lines []string
	for _, e := range pn.squid.AccessLog() {
		lines = append(lines, e.String())
	}
	t.Logf("squid's access log:\n%s", strings.Join(lines, "\n"))
}

// hasAccess reports whether the log has an entry from client for method
// and url with result (and user, when not empty).
func hasAccess(log []harness.AccessEntry, client, method, url, result, user string) bool {
	for _, e := range log {
		if e.Client == client && e.Method == method && e.URL == url && e.Result == result && (user == "" || e.User == user) {
			return true
		}
	}
	return false
}

// proxyEnv sets the proxy for HTTPS in both spellings, and clears
// NO_PROXY and HTTP_PROXY that the test's own environment may carry.
func proxyEnv(proxyURL string) []string {
	return []string{
		"HTTPS_PROXY=" + proxyURL, "https_proxy=" + proxyURL,
		"HTTP_PROXY=", "http_proxy=", "NO_PROXY=", "no_proxy=",
	}
}

func echoIfVerbose() io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return nil
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
