// Package interop checks the emulator against Microsoft's official Node.js SDKs
// (azure-iot-device + azure-iot-device-mqtt as device and module clients, azure-iothub as the
// service client): the emulator is judged by Microsoft's clients, not only ours.
package interop_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/testutil"
)

// The official clients cannot be pointed at other ports than 8883 and 443, so this test owns a
// loopback address of its own.
const addr = "127.0.88.1"

const (
	edgeDevice = emulator.DefaultDeviceID
	module     = emulator.DefaultModuleID
	device     = "node-device"
	offline    = "offline-device"
	renewing   = "renewing"
	modelID    = "dtmi:azure:videoanalyzer:WebSocketTunneling;1"
)

type event struct {
	Event, Name, Step, Message string
	Payload, Delta, Desired    json.RawMessage
}

// nodeProc is a running device.js.
type nodeProc struct {
	events chan event
	stdin  interface{ Close() error }
	stderr *testutil.LogBuffer
	done   chan error
}

func startDevice(t *testing.T, ctx context.Context, node string, env []string, args ...string) *nodeProc {
	t.Helper()
	cmd := exec.CommandContext(ctx, node, append([]string{"device.js"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &nodeProc{events: make(chan event, 64), stdin: stdin, stderr: &testutil.LogBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				p.events <- ev
			}
		}
		close(p.events)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close() // device.js closes its client and exits when stdin ends
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("device.js %v stderr:\n%s", args, p.stderr.String())
		}
	})
	return p
}

// wait returns the first event matching pred.
func (p *nodeProc) wait(t *testing.T, ctx context.Context, what string, pred func(event) bool) event {
	t.Helper()
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				t.Fatalf("device.js exited while waiting for %s; stderr:\n%s", what, p.stderr.String())
			}
			if ev.Event == "error" {
				t.Fatalf("device.js error at %s: %s", ev.Step, ev.Message)
			}
			if pred(ev) {
				return ev
			}
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; stderr:\n%s", what, p.stderr.String())
		}
	}
}

type serviceResult struct {
	OK         bool
	Result     json.RawMessage
	Name       string
	Message    string
	StatusCode int
	Body       string
}

func runService(t *testing.T, ctx context.Context, node string, env []string, args ...string) serviceResult {
	t.Helper()
	cmd := exec.CommandContext(ctx, node, append([]string{"service.js"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("service.js %v: %v\n%s", args, err, stderr.String())
	}
	var r serviceResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("service.js %v printed %q: %v\n%s", args, out, err, stderr.String())
	}
	return r
}

func TestNodeSDKInterop(t *testing.T) {
	// Outside CI a machine without Node.js skips this test; in CI (CI set,
	// as GitHub Actions and most CI systems do) a missing Node.js or SDK
	// fails it, so a run that never talked to the SDKs cannot pass.
	skip := t.Skip
	if os.Getenv("CI") != "" {
		skip = t.Fatal
	}
	node, err := exec.LookPath("node")
	if err != nil {
		skip("node is not installed (the interop test runs Microsoft's Node.js SDKs; install Node.js 20+ and run scripts/setup.sh)")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "azure-iothub", "package.json")); err != nil {
		skip("the Node.js SDKs are not installed; run scripts/setup.sh (or: cd tools/edgeemu/interop && npm ci)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	e, err := emulator.New(emulator.Options{
		Addr:      addr,
		MQTTPort:  emulator.StandardMQTTPort,
		HTTPSPort: emulator.StandardHTTPSPort,
		Dir:       t.TempDir(),
		// edgeHub finds expired tokens every 5 minutes; here every second, so that a client
		// that failed to renew would be dropped.
		TokenCheckInterval: time.Second,
		Identities: []emulator.Identity{
			{DeviceID: edgeDevice, ModuleID: module},
			{DeviceID: edgeDevice, ModuleID: renewing},
			{DeviceID: device},
			{DeviceID: offline},
		},
	})
	if errors.Is(err, syscall.EACCES) {
		t.Skipf("skipping: binding %s:8883 and :443 needs root or CAP_NET_BIND_SERVICE: %v", addr, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })

	// The module in IoT Edge workload mode: tokens from the workload API, CA from its trust bundle.
	modEnv, err := e.ModuleEnv(edgeDevice, module)
	if err != nil {
		t.Fatal(err)
	}
	mod := startDevice(t, ctx, node, modEnv, "module-env", modelID)
	// A plain device over MQTT over WebSockets (port 443), with the CA from NODE_EXTRA_CA_CERTS.
	devEnv, err := e.DeviceEnv(device, "")
	if err != nil {
		t.Fatal(err)
	}
	devEnv = append(devEnv, "NODE_EXTRA_CA_CERTS="+e.CAFile())
	dev := startDevice(t, ctx, node, devEnv, "device-cs", "", "ws")

	mod.wait(t, ctx, "module ready", func(ev event) bool { return ev.Event == "ready" })
	dev.wait(t, ctx, "device ready", func(ev event) bool { return ev.Event == "ready" })

	if info, _ := e.ConnInfo(edgeDevice, module); !info.Connected || info.ModelID != modelID || info.Transport != "mqtts" || info.APIVersion != "2021-04-12" {
		t.Errorf("module connection %+v", info)
	}
	if info, _ := e.ConnInfo(device, ""); !info.Connected || info.Transport != "wss" {
		t.Errorf("device connection %+v", info)
	}
	for _, id := range [][2]string{{edgeDevice, module}, {device, ""}} {
		if err := e.WaitTwin(ctx, id[0], id[1], func(_, r json.RawMessage) bool { return strings.Contains(string(r), `"ready":true`) }); err != nil {
			t.Fatalf("%v reported properties: %v", id, err)
		}
	}

	svcEnv := append(e.ServiceEnv(), "NODE_EXTRA_CA_CERTS="+e.CAFile())
	methods := []struct {
		name                  string
		args                  []string
		wantOK                bool
		wantResult            string // exact JSON of the SDK's result
		wantStatus            int    // HTTP status of a failure
		wantErrName, wantBody string // error class and a substring of the error body
	}{
		{name: "module method", args: []string{edgeDevice, module, "echo", `{"localPort":554}`, "30"},
			wantOK: true, wantResult: `{"payload":{"echo":{"localPort":554}},"status":200}`},
		{name: "module status passthrough", args: []string{edgeDevice, module, "fail", `{}`, "30"},
			wantOK: true, wantResult: `{"payload":{"code":"400","message":"Local port is not available","target":"cam:554"},"status":400}`},
		{name: "device method over websockets", args: []string{device, "-", "echo", `"hi"`, "30"},
			wantOK: true, wantResult: `{"payload":{"echo":"hi"},"status":200}`},
		{name: "offline device 404103", args: []string{offline, "-", "echo", `{}`, "30"},
			wantStatus: 404, wantErrName: "Error", wantBody: `404103`},
		{name: "unregistered method handler times out 504101", args: []string{edgeDevice, module, "slow", `{}`, "5"},
			wantStatus: 504, wantErrName: "GatewayTimeoutError", wantBody: `504101`},
	}
	for _, tt := range methods {
		t.Run(tt.name, func(t *testing.T) {
			r := runService(t, ctx, node, svcEnv, append([]string{"invoke"}, tt.args...)...)
			if r.OK != tt.wantOK {
				t.Fatalf("result %+v", r)
			}
			if tt.wantOK {
				if got := canonical(t, r.Result); got != tt.wantResult {
					t.Errorf("result %s, want %s", got, tt.wantResult)
				}
				return
			}
			if r.StatusCode != tt.wantStatus || r.Name != tt.wantErrName || !strings.Contains(r.Body, tt.wantBody) {
				t.Errorf("error %+v, want %d %s with %s", r, tt.wantStatus, tt.wantErrName, tt.wantBody)
			}
		})
	}

	t.Run("module twin get", func(t *testing.T) {
		r := runService(t, ctx, node, svcEnv, "twin-get", edgeDevice, module)
		var tw struct {
			ConnectionState, ModelID string
			Properties               struct{ Reported map[string]any }
		}
		if err := json.Unmarshal(r.Result, &tw); !r.OK || err != nil {
			t.Fatalf("%+v %v", r, err)
		}
		if tw.ConnectionState != "Connected" || tw.ModelID != modelID || tw.Properties.Reported["ready"] != true {
			t.Errorf("twin %s", r.Result)
		}
	})

	updates := []struct {
		name           string
		device, module string
		proc           *nodeProc
	}{
		{"module desired push", edgeDevice, module, mod},
		{"device desired push over websockets", device, "-", dev},
	}
	for _, u := range updates {
		t.Run(u.name, func(t *testing.T) {
			r := runService(t, ctx, node, svcEnv, "twin-update", u.device, u.module, `{"properties":{"desired":{"logLevel":"debug"}}}`)
			if !r.OK {
				t.Fatalf("twin update: %+v", r)
			}
			ev := u.proc.wait(t, ctx, "desired push", func(ev event) bool { return ev.Event == "desired" })
			var delta map[string]any
			if err := json.Unmarshal(ev.Delta, &delta); err != nil || delta["logLevel"] != "debug" || delta["$version"] != 2.0 {
				t.Errorf("desired delta %s", ev.Delta)
			}
		})
	}

	// The SDK renews its token by reconnecting with the same client id, which the emulator
	// treats as edgeHub does (old connection closed after the new CONNACK, a persistent
	// session's subscriptions restored after it): methods and desired patches must keep
	// reaching the module after every renewal.
	t.Run("module keeps working across token renewals", func(t *testing.T) {
		env, err := e.ModuleEnv(edgeDevice, renewing)
		if err != nil {
			t.Fatal(err)
		}
		// 8 s tokens renewed 4 s before they expire: a renewal every 4 s.
		p := startDevice(t, ctx, node, append(env, "TOKEN_VALID_SECONDS=8", "TOKEN_MARGIN_SECONDS=4"), "module-env", modelID)
		p.wait(t, ctx, "ready", func(ev event) bool { return ev.Event == "ready" })
		for round := 1; round <= 3; round++ {
			if err := e.WaitConnects(ctx, edgeDevice, renewing, round+1); err != nil {
				t.Fatalf("renewal %d: %v", round, err)
			}
			// The SDK connects again, then subscribes again (or has the session restored).
			if err := e.WaitSubscribed(ctx, edgeDevice, renewing, "$iothub/methods/POST/#"); err != nil {
				t.Fatalf("renewal %d: %v", round, err)
			}
			if err := e.WaitSubscribed(ctx, edgeDevice, renewing, "$iothub/twin/PATCH/properties/desired/#"); err != nil {
				t.Fatalf("renewal %d: %v", round, err)
			}
			payload := fmt.Sprintf(`{"round":%d}`, round)
			r := runService(t, ctx, node, svcEnv, "invoke", edgeDevice, renewing, "echo", payload, "30")
			if want := fmt.Sprintf(`{"payload":{"echo":{"round":%d}},"status":200}`, round); !r.OK || canonical(t, r.Result) != want {
				t.Errorf("renewal %d: method %+v, want %s", round, r, want)
			}
			r = runService(t, ctx, node, svcEnv, "twin-update", edgeDevice, renewing, fmt.Sprintf(`{"properties":{"desired":{"round":%d}}}`, round))
			if !r.OK {
				t.Fatalf("renewal %d: twin update %+v", round, r)
			}
			p.wait(t, ctx, fmt.Sprintf("desired push after renewal %d", round), func(ev event) bool {
				var d map[string]any
				return ev.Event == "desired" && json.Unmarshal(ev.Delta, &d) == nil && d["round"] == float64(round)
			})
		}
	})
}

func canonical(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
