package emulator_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amenzhinsky/iothub/iotdevice"
	iotmqtt "github.com/amenzhinsky/iothub/iotdevice/transport/mqtt"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/testutil"
)

// TestDeviceSDK drives the emulator with the module's real device SDK in IoT Edge workload
// mode: SAS tokens signed by the workload API, a direct method, twin read, reported update and
// desired push. Not parallel: it sets the process environment, and the SDK keeps the first
// workload socket it sees in a package variable.
func TestDeviceSDK(t *testing.T) {
	// The SDK dials the first workload socket path it sees for the rest of the process, so
	// every run (-count=N) uses the same one.
	sock := filepath.Join(os.TempDir(), fmt.Sprintf("edgeemu-sdk-test-%d.sock", os.Getpid()))
	e := start(t, emulator.Options{WorkloadSocket: sock})
	ctx := testutil.Context(t)
	env, err := e.ModuleEnv(testDevice, testModule)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range envMap(env) {
		t.Setenv(k, v)
	}
	tr := iotmqtt.NewModuleTransport(iotmqtt.WithClientOptionsConfig(func(o *paho.ClientOptions) {
		// The SDK always dials port 8883 and, when it cannot fetch the trust bundle, turns TLS
		// verification off; point it at our port and pin our CA (DESIGN.md §5 traps 1 and 4).
		o.Servers = []*url.URL{{Scheme: "tls", Host: e.MQTTAddr()}}
		o.SetOrderMatters(false)
		o.SetTLSConfig(e.TLSConfig(e.GatewayHostName()))
	}))
	c, err := iotdevice.NewModuleFromEnvironment(tr, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })

	// Like edgeHub, the emulator binds a connection just after its CONNACK.
	if err := e.WaitConnected(ctx, testDevice, testModule); err != nil {
		t.Fatal(err)
	}
	info, _ := e.ConnInfo(testDevice, testModule)
	if !info.Connected || info.APIVersion != "2018-06-30" || info.ModelID != "" {
		// The module transport ignores WithModelID (DESIGN.md §5 trap 3): no model id.
		t.Errorf("ConnInfo = %+v", info)
	}

	if err := c.RegisterMethod(ctx, "tunnelOpen", func(p map[string]any) (int, map[string]any, error) {
		return 200, map[string]any{"sessionId": "s1", "target": "cam:554", "port": p["localPort"]}, nil
	}); err != nil {
		t.Fatal(err)
	}
	status, body, err := e.InvokeMethod(ctx, testDevice, testModule, "tunnelOpen", json.RawMessage(`{"localPort":554}`), 10*time.Second)
	if err != nil || status != 200 || !strings.Contains(string(body), `"sessionId":"s1"`) || !strings.Contains(string(body), `"port":554`) {
		t.Fatalf("InvokeMethod = %d %s %v", status, body, err)
	}

	if _, err := e.PatchDesired(testDevice, testModule, json.RawMessage(`{"logLevel":"info"}`)); err != nil {
		t.Fatal(err)
	}
	desired, reported, err := c.RetrieveTwinState(ctx)
	if err != nil {
		t.Fatalf("RetrieveTwinState: %v", err)
	}
	if desired["logLevel"] != "info" || desired.Version() != 2 || reported.Version() != 1 {
		t.Errorf("twin desired=%v reported=%v", desired, reported)
	}
	v, err := c.UpdateTwinState(ctx, iotdevice.TwinState{"summary": map[string]any{"active": 0}})
	if err != nil || v != 2 {
		t.Fatalf("UpdateTwinState = %d, %v", v, err)
	}
	if _, rep, _ := e.Twin(testDevice, testModule); string(rep) != `{"$version":2,"summary":{"active":0}}` {
		t.Errorf("reported = %s", rep)
	}

	sub, err := c.SubscribeTwinUpdates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.PatchDesired(testDevice, testModule, json.RawMessage(`{"logLevel":"debug"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-sub.C():
		if s["logLevel"] != "debug" || s.Version() != 3 {
			t.Errorf("desired push %v", s)
		}
	case <-ctx.Done():
		t.Fatal("no desired push")
	}
}
