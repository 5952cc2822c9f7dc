package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testcloud"
	"github.com/rtsptunnel/rtsptunnel/tools/camerasim/camera"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

const (
	edgeDevice = "edge-device"
	moduleID   = "rtsptunnel"
	methodsSub = "$iothub/methods/POST/#"
)

// chain is one emulator, one camera, one test cloud endpoint and the real
// module binary wired together, all on loopback with free ports.
type chain struct {
	t       *testing.T
	dir     string
	emu     *emulator.Emulator
	emuOpts emulator.Options
	cam     *camera.Server
	cloud   *testcloud.Server
	module  *harness.Process
	metrics string // host:port of the module's metrics server
}

type chainOptions struct {
	env     []string         // extra module environment
	emu     emulator.Options // Dir, Logger and Addr are filled in
	noStart bool             // leave the module for the test to start
}

func newChain(t *testing.T, ctx context.Context, o chainOptions) *chain {
	t.Helper()
	c := &chain{t: t, dir: shortTempDir(t)}
	c.emuOpts = o.emu
	c.emuOpts.Dir = filepath.Join(c.dir, "emu")
	c.startEmulator()

	c.cam = &camera.Server{}
	if err := c.cam.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.cam.Close)

	cloud, err := testcloud.New(testcloud.Options{Dir: c.dir})
	if err != nil {
		t.Fatal(err)
	}
	c.cloud = cloud
	t.Cleanup(cloud.Close)

	c.metrics = "127.0.0.1:0" // see startModule
	if !o.noStart {
		c.startModule(ctx, o.env...)
	}
	return c
}

// shortTempDir returns a temporary folder with a short path: the workload
// API's unix socket path must fit in 107 bytes.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (c *chain) startEmulator() {
	c.t.Helper()
	emu, err := emulator.New(c.emuOpts)
	if err != nil {
		c.t.Fatal(err)
	}
	c.emu = emu
	// Keep the ports so that a restart binds the same ones.
	c.emuOpts.MQTTPort, c.emuOpts.HTTPSPort = emu.MQTTPort(), emu.HTTPSPort()
	c.t.Cleanup(func() { emu.Close() })
}

// restartEmulator closes the emulator and starts it again on the same ports
// with the same state folder, after the pause.
func (c *chain) restartEmulator(pause time.Duration) {
	c.t.Helper()
	if err := c.emu.Close(); err != nil {
		c.t.Fatalf("closing the emulator: %v", err)
	}
	time.Sleep(pause) // the outage itself, not a wait for readiness
	c.startEmulator()
}

// moduleEnv is the environment the module runs with: the emulator's
// workload-mode variables, the camera as target 554, the cloud's CA.
func (c *chain) moduleEnv(extra ...string) []string {
	c.t.Helper()
	env, err := c.emu.ModuleEnv(edgeDevice, moduleID)
	if err != nil {
		c.t.Fatal(err)
	}
	env = append(env,
		`RTSPTUNNEL_TARGETS={"554":"`+c.cam.ListenAddr()+`"}`,
		"RTSPTUNNEL_REMOTECAFILE="+c.cloud.CAFile(),
		// The cloud and the relay listen on loopback, which the module
		// refuses unless allowedRemoteHosts names the host exactly.
		"RTSPTUNNEL_ALLOWEDREMOTEHOSTS=127.0.0.1",
		"RTSPTUNNEL_METRICSADDR="+c.metrics,
		"RTSPTUNNEL_LOGLEVEL=debug",
		"RTSPTUNNEL_LOGFORMAT=json", // logLines and waitLog decode JSON; the default is syslog
	)
	return append(env, extra...)
}

func (c *chain) startModule(ctx context.Context, extra ...string) {
	c.t.Helper()
	bin := build(c.t, harness.Module)
	var echo io.Writer
	if testing.Verbose() {
		echo = os.Stderr
	}
	// The metrics port: 0, learnt from the module's "serving metrics" line,
	// so that no free-port guess can collide with another test's listener;
	// a guess only when the test silences INFO lines.
	pinned := slices.ContainsFunc(extra, func(e string) bool { return strings.HasPrefix(e, "RTSPTUNNEL_METRICSADDR=") })
	quiet := slices.ContainsFunc(extra, func(e string) bool {
		lvl, ok := strings.CutPrefix(e, "RTSPTUNNEL_LOGLEVEL=")
		return ok && lvl != "debug" && lvl != "info"
	})
	if !pinned {
		c.metrics = "127.0.0.1:0"
		if quiet {
			c.metrics = freeAddr(c.t)
		}
	}
	p, err := harness.Start(ctx, "rtsptunnel", bin, nil, &harness.StartOptions{Env: c.moduleEnv(extra...), Echo: echo})
	if err != nil {
		c.t.Fatal(err)
	}
	c.module = p
	c.t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if c.t.Failed() && !testing.Verbose() {
			c.t.Logf("module output:\n%s", p.Output())
		}
	})
	if !pinned && !quiet {
		c.metrics = c.metricsAddr(ctx, p)
	}
	c.waitReady(ctx)
}

// metricsAddr returns the address the module's "serving metrics" line names.
func (c *chain) metricsAddr(ctx context.Context, p *harness.Process) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var addr string
	_, err := p.WaitLine(ctx, func(l string) bool {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["msg"] != "serving metrics" {
			return false
		}
		addr, _ = m["address"].(string)
		return addr != ""
	})
	if err != nil {
		c.t.Fatalf("the module did not say where it serves metrics: %v\n%s", err, p.Output())
	}
	return addr
}

// waitReady waits until the module answers methods.
func (c *chain) waitReady(ctx context.Context) {
	c.t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	exited := c.module.Done() // read now: a restart replaces c.module
	go func() {
		select {
		case <-exited: // no point waiting for a module that exited
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := c.emu.WaitSubscribed(ctx, edgeDevice, moduleID, methodsSub); err != nil {
		c.t.Fatalf("module never subscribed to methods: %v\n%s", err, c.module.Output())
	}
}

// openPayload is a tunnelOpen payload.
type openPayload struct {
	RemoteEndpoint           string `json:"remoteEndpoint"`
	RemoteAuthorizationToken string `json:"remoteAuthorizationToken"`
	LocalPort                int    `json:"localPort"`
}

// invoke calls a method on the module through the emulator.
func (c *chain) invoke(ctx context.Context, method string, payload any) (int, json.RawMessage) {
	c.t.Helper()
	var raw json.RawMessage
	switch p := payload.(type) {
	case json.RawMessage:
		raw = p
	default:
		b, err := json.Marshal(payload)
		if err != nil {
			c.t.Fatal(err)
		}
		raw = b
	}
	status, resp, err := c.emu.InvokeMethod(ctx, edgeDevice, moduleID, method, raw, 30*time.Second)
	if err != nil {
		c.t.Fatalf("invoking %s: %v", method, err)
	}
	return status, resp
}

// openTunnel creates a cloud session and opens a tunnel to it on port 554.
func (c *chain) openTunnel(ctx context.Context, token string) (*testcloud.Session, string) {
	c.t.Helper()
	s, err := c.cloud.NewSession(token)
	if err != nil {
		c.t.Fatal(err)
	}
	status, body := c.invoke(ctx, "tunnelOpen", openPayload{s.URL(), token, 554})
	if status != 200 {
		c.t.Fatalf("tunnelOpen answered %d %s", status, body)
	}
	var ok struct{ SessionID, Target string }
	if err := json.Unmarshal(body, &ok); err != nil || ok.SessionID == "" {
		c.t.Fatalf("tunnelOpen 200 body %s: want sessionId (%v)", body, err)
	}
	if ok.Target != c.cam.ListenAddr() {
		c.t.Errorf("tunnelOpen target = %q, want the camera %q", ok.Target, c.cam.ListenAddr())
	}
	return s, ok.SessionID
}

// rtspURL is the URL a player uses to read the camera through session s.
func rtspURL(s *testcloud.Session) string {
	return "rtsp://" + s.ListenAddr() + camera.DefaultPath
}

// stopGrace is how long a test that checks a clean exit gives a binary
// after SIGTERM. Both exit in about a second (the module's steps are bounded
// at 4.5 s in all); 30 s is beyond what a loaded machine adds, and a binary
// that hangs still fails.
const stopGrace = 30 * time.Second

// stopModule sends the module SIGTERM and checks a clean exit: code 0 within
// stopGrace, and no shutdown step that ran into its bound. The steps are each
// bounded (4.5 s in all, under IoT Edge's 10 s) and, with every peer
// answering at once, end in well under a second: stopGrace only catches a
// step without a bound, which never ends; a step that hit its bound is
// caught by outcome, its warning. It returns how long the exit took.
func (c *chain) stopModule() time.Duration {
	c.t.Helper()
	code, took, err := c.module.Stop(stopGrace)
	if err != nil {
		c.t.Fatal(err)
	}
	if out := c.module.Output(); strings.Contains(out, "did not all close in time") || strings.Contains(out, "failed to flush") {
		c.t.Error("a shutdown step ran into its bound (see the module's output)")
	}
	if code != 0 {
		c.t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	return took
}

// mustPlay fails the test unless ffprobe reads 2 s of video from url: at
// least 25 packets of the camera's 25 fps, ffprobe's start-up costing a few.
// ffprobe counts stream time, so a loaded machine only makes it slower.
func mustPlay(t *testing.T, ctx context.Context, url, what string) {
	t.Helper()
	if p, err := harness.FFProbe(ctx, url, 2*time.Second); err != nil || p.Packets < 25 {
		t.Fatalf("%s: %d packets, %v", what, p.Packets, err)
	}
}

// scrape returns the module's metrics text.
func (c *chain) scrape(ctx context.Context) string {
	c.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.metrics+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("scraping metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue returns the value of the first sample whose line starts with
// prefix (a metric name with optional labels), or -1.
func metricValue(text, prefix string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			var v float64
			if _, err := fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v); err == nil {
				return v
			}
		}
	}
	return -1
}

// reported returns the module twin's reported properties.
func (c *chain) reported() map[string]any {
	c.t.Helper()
	_, rep, err := c.emu.Twin(edgeDevice, moduleID)
	if err != nil {
		c.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(rep, &m); err != nil {
		c.t.Fatal(err)
	}
	return m
}

// waitReported waits until the reported properties satisfy cond.
func (c *chain) waitReported(ctx context.Context, what string, cond func(rep map[string]any) bool) map[string]any {
	c.t.Helper()
	var last map[string]any
	err := c.emu.WaitTwin(ctx, edgeDevice, moduleID, func(_, rep json.RawMessage) bool {
		var m map[string]any
		if json.Unmarshal(rep, &m) != nil {
			return false
		}
		last = m
		return cond(m)
	})
	if err != nil {
		b, _ := json.Marshal(last)
		c.t.Fatalf("reported properties never showed %s: %v; last: %s", what, err, b)
	}
	return last
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// jsonEqual reports whether two JSON documents are equal once decoded.
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}
