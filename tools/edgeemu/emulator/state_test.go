package emulator_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/testutil"
)

// workloadClient talks HTTP over the workload socket.
func workloadClient(e *emulator.Emulator) *http.Client {
	path := strings.TrimPrefix(e.WorkloadURI(), "unix://")
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func TestWorkloadAPI(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{})
	c := workloadClient(e)
	env, err := e.ModuleEnv(testDevice, testModule)
	if err != nil {
		t.Fatal(err)
	}
	genid := envMap(env)["IOTEDGE_MODULEGENERATIONID"]
	key := keyOf(t, e, testDevice, testModule)
	data := []byte("hub%2Fdevices%2Fd\n1700000000")
	mac := hmac.New(sha256.New, key)
	mac.Write(data)
	wantDigest := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	signBody := func(keyID, algo, d string) string {
		b, _ := json.Marshal(map[string]string{"keyId": keyID, "algo": algo, "data": d})
		return string(b)
	}
	good := signBody("primary", "HMACSHA256", base64.StdEncoding.EncodeToString(data))
	signPath := "/modules/" + testModule + "/genid/" + genid + "/sign?api-version=2018-06-28"

	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantField, wantValue     string
	}{
		{"sign", "POST", signPath, good, 200, "digest", wantDigest},
		{"sign newer api-version", "POST", strings.Replace(signPath, "2018-06-28", "2022-08-03", 1), good, 200, "digest", wantDigest},
		{"trust bundle", "GET", "/trust-bundle?api-version=2019-11-05", "", 200, "certificate", string(e.CAPEM())},
		{"unknown module", "POST", "/modules/ghost/genid/" + genid + "/sign?api-version=2018-06-28", good, 404, "message", ""},
		{"wrong generation id", "POST", "/modules/" + testModule + "/genid/123/sign?api-version=2018-06-28", good, 404, "message", ""},
		{"bad JSON", "POST", signPath, "{", 400, "message", ""},
		{"bad base64", "POST", signPath, signBody("primary", "HMACSHA256", "!!"), 400, "message", ""},
		{"empty data", "POST", signPath, signBody("primary", "HMACSHA256", ""), 400, "message", ""},
		{"bad algo", "POST", signPath, signBody("primary", "HMACSHA1", "YQ=="), 400, "message", ""},
		{"bad key id", "POST", signPath, signBody("tertiary", "HMACSHA256", "YQ=="), 400, "message", ""},
		{"no api-version", "GET", "/trust-bundle", "", 400, "message", ""},
		{"unknown api-version", "GET", "/trust-bundle?api-version=2000-01-01", "", 400, "message", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://workload"+tt.path, strings.NewReader(tt.body))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]string
			b, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(b, &body); err != nil {
				t.Fatalf("body %s: %v", b, err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, b, tt.wantStatus)
			}
			if v, ok := body[tt.wantField]; !ok || (tt.wantValue != "" && v != tt.wantValue) || v == "" {
				t.Errorf("body %s, want %s=%q", b, tt.wantField, tt.wantValue)
			}
		})
	}
}

func TestEnvFiles(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{Identities: []emulator.Identity{
		{DeviceID: "gw", ModuleID: "first"},
		{DeviceID: "gw", ModuleID: "second"},
		{DeviceID: "sensor"},
	}})
	read := func(name string) map[string]string {
		b, err := os.ReadFile(filepath.Join(e.Dir(), name))
		if err != nil {
			t.Fatal(err)
		}
		return envMap(strings.Split(strings.TrimSpace(string(b)), "\n"))
	}
	port := strings.TrimPrefix(e.MQTTAddr(), "127.0.0.1:")
	mod := read(emulator.ModuleEnvFile)
	want := map[string]string{
		"IOTEDGE_IOTHUBHOSTNAME":  "127.0.0.1",
		"IOTEDGE_GATEWAYHOSTNAME": "127.0.0.1",
		"IOTEDGE_DEVICEID":        "gw",
		"IOTEDGE_MODULEID":        "first",
		"IOTEDGE_WORKLOADURI":     "unix://" + filepath.Join(e.Dir(), "workload.sock"),
		"IOTEDGE_APIVERSION":      "2019-11-05",
		"IOTEDGE_AUTHSCHEME":      "sasToken",
		"HOSTNAME":                "first",
		"RTSPTUNNEL_HUBPORT":      port,
	}
	for k, v := range want {
		if mod[k] != v {
			t.Errorf("module.env %s=%q, want %q", k, mod[k], v)
		}
	}
	if len(mod["IOTEDGE_MODULEGENERATIONID"]) != 18 {
		t.Errorf("generation id %q", mod["IOTEDGE_MODULEGENERATIONID"])
	}
	key := base64.StdEncoding.EncodeToString(keyOf(t, e, "gw", "first"))
	hd := read(emulator.HubDevEnvFile)
	if got, want := hd["EdgeHubConnectionString"], "HostName=127.0.0.1;GatewayHostName=127.0.0.1;DeviceId=gw;ModuleId=first;SharedAccessKey="+key; got != want {
		t.Errorf("EdgeHubConnectionString = %q, want %q", got, want)
	}
	if hd["EdgeModuleCACertificateFile"] != e.CAFile() || !filepath.IsAbs(e.CAFile()) {
		t.Errorf("hubdev.env %v", hd)
	}
	dev := read(emulator.DeviceEnvFile)
	if got, want := dev["IOTHUB_CONNECTION_STRING"], "HostName=127.0.0.1;DeviceId=sensor;SharedAccessKey="+base64.StdEncoding.EncodeToString(keyOf(t, e, "sensor", "")); got != want {
		t.Errorf("device.env connection string %q, want %q", got, want)
	}
	svc := read(emulator.ServiceEnvFile)
	if svc["IOTHUB_SERVICE_URL"] != "https://"+e.HTTPSAddr() || svc["IOTHUB_CA_FILE"] != e.CAFile() ||
		!strings.HasPrefix(svc["IOTHUB_SERVICE_CONNECTION_STRING"], "HostName=127.0.0.1;SharedAccessKeyName=service;SharedAccessKey=") {
		t.Errorf("service.env %v", svc)
	}

	// A hub name that is not the address: clients are told where to connect.
	e2 := start(t, emulator.Options{Addr: "127.0.0.1", HubHostName: "myhub.azure-devices.net", MQTTPort: 0})
	cs, err := e2.ConnectionString(testDevice, testModule)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cs, "HostName=myhub.azure-devices.net;DeviceId=edge-device;ModuleId=rtsptunnel;SharedAccessKey=") || !strings.HasSuffix(cs, ";GatewayHostName=127.0.0.1") {
		t.Errorf("connection string %q", cs)
	}
	// The certificate covers the hub name too.
	d, err := dial(t, e2, "tls://"+e2.MQTTAddr(), newCreds(t, e2, testDevice, testModule))
	if err != nil {
		t.Fatalf("connect with hub name %s: %v", e2.HubHostName(), err)
	}
	d.c.Disconnect(0)
}

func TestRestartKeepsState(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t)
	dir := t.TempDir()
	opts := emulator.Options{Dir: dir, Logger: testLogger(t), Identities: []emulator.Identity{{DeviceID: testDevice, ModuleID: testModule}}}
	e1, err := emulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	env1, _ := e1.ModuleEnv(testDevice, testModule)
	svc1 := e1.ServiceConnectionString()
	ca1 := e1.CAPEM()
	cs1, _ := e1.ConnectionString(testDevice, testModule)
	d := connect(t, e1, testDevice, testModule)
	d.serveTwin()
	if _, err := d.patchReported(ctx, `{"sessions":{"a":1}}`); err != nil {
		t.Fatal(err)
	}
	if _, err := e1.PatchDesired(testDevice, testModule, json.RawMessage(`{"targets":{"554":"cam:554"}}`)); err != nil {
		t.Fatal(err)
	}
	desired1, reported1, _ := e1.Twin(testDevice, testModule)
	opts.MQTTPort, opts.HTTPSPort = e1.MQTTPort(), e1.HTTPSPort()
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.waitLost(ctx); err != nil {
		t.Fatal(err)
	}

	// Same folder, same ports, no identities given: everything comes back.
	opts.Identities = nil
	e2 := start(t, opts)
	env2, _ := e2.ModuleEnv(testDevice, testModule)
	cs2, _ := e2.ConnectionString(testDevice, testModule)
	desired2, reported2, _ := e2.Twin(testDevice, testModule)
	checks := []struct {
		name     string
		got, was any
	}{
		{"module env (generation id)", env2, env1},
		{"connection string (key)", cs2, cs1},
		{"service connection string", e2.ServiceConnectionString(), svc1},
		{"desired", string(desired2), string(desired1)},
		{"reported", string(reported2), string(reported1)},
	}
	for _, c := range checks {
		if !slices.Equal(toStrings(c.got), toStrings(c.was)) {
			t.Errorf("%s changed across restart: %v -> %v", c.name, c.was, c.got)
		}
	}
	if !bytes.Equal(e2.CAPEM(), ca1) {
		t.Error("CA changed across restart")
	}
	// The old credentials and CA still work against the new instance.
	d2 := connect(t, e2, testDevice, testModule)
	d2.serveTwin()
	r, err := d2.getTwin(ctx)
	if err != nil || !strings.Contains(string(r.body), `"sessions":{"a":1}`) || !strings.Contains(string(r.body), `"cam:554"`) {
		t.Fatalf("twin after restart: %s %v", r.body, err)
	}
}

func toStrings(v any) []string {
	switch v := v.(type) {
	case []string:
		return v
	case string:
		return []string{v}
	}
	return nil
}

func TestOptionsValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name string
		opts emulator.Options
	}{
		{"non-loopback", emulator.Options{Dir: dir, Addr: "192.0.2.1"}},
		{"not an IP", emulator.Options{Dir: dir, Addr: "localhost"}},
		{"no dir", emulator.Options{}},
		{"bad port", emulator.Options{Dir: dir, MQTTPort: 70000}},
		{"negative token check interval", emulator.Options{Dir: dir, TokenCheckInterval: -time.Second}},
		{"socket path too long", emulator.Options{Dir: dir, WorkloadSocket: filepath.Join(dir, strings.Repeat("s", 120))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if e, err := emulator.New(tt.opts); err == nil {
				e.Close()
				t.Fatal("New succeeded")
			}
		})
	}
	t.Run("port in use", func(t *testing.T) {
		e := start(t, emulator.Options{})
		if e2, err := emulator.New(emulator.Options{Dir: t.TempDir(), MQTTPort: e.MQTTPort()}); err == nil {
			e2.Close()
			t.Fatal("New succeeded on a busy port")
		}
	})
}

func TestSideBySide(t *testing.T) {
	t.Parallel()
	// Two emulators on the same ports but different loopback addresses.
	a := start(t, emulator.Options{Addr: "127.0.0.2"})
	b := start(t, emulator.Options{Addr: "127.0.0.3", MQTTPort: a.MQTTPort(), HTTPSPort: a.HTTPSPort()})
	for _, e := range []*emulator.Emulator{a, b} {
		d := connect(t, e, testDevice, testModule)
		d.c.Disconnect(0)
	}
}
