package identity

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

const testKey = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=" // base64("secret-key-for-tests-only-123456")

// handshake runs a TLS handshake of cfg against a server presenting a
// certificate ca issued for "gateway.test", over loopback TCP (net.Pipe is
// unbuffered and deadlocks when the client rejects the server's flight while
// the server is still writing it).
func handshake(t *testing.T, ctx context.Context, cfg *tls.Config, ca *testutil.CA) error {
	t.Helper()
	server := ca.Leaf(t, "gateway.test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{server}}).HandshakeContext(ctx)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return tls.Client(c, cfg).HandshakeContext(ctx)
}

// workload is a fake IoT Edge workload API.
type workload struct {
	bundle    string       // PEM served by trust-bundle
	bundleErr int          // status to answer trust-bundle with, 0 = 200
	signErr   int          // status to answer sign with, 0 = 200
	signs     atomic.Int32 // sign calls
	module    string
	genID     string
}

func (w *workload) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	fail := func(code int) {
		rw.WriteHeader(code)
		_ = json.NewEncoder(rw).Encode(map[string]string{"message": "boom " + strconv.Itoa(code)})
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/trust-bundle":
		if r.URL.Query().Get("api-version") != workloadAPIVersion {
			fail(http.StatusBadRequest)
			return
		}
		if w.bundleErr != 0 {
			fail(w.bundleErr)
			return
		}
		_ = json.NewEncoder(rw).Encode(map[string]string{"certificate": w.bundle})
	case r.Method == http.MethodPost && r.URL.Path == "/modules/"+w.module+"/genid/"+w.genID+"/sign":
		w.signs.Add(1)
		if w.signErr != 0 {
			fail(w.signErr)
			return
		}
		var req struct{ KeyID, Algo, Data string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.KeyID != "primary" || req.Algo != "HMACSHA256" ||
			r.URL.Query().Get("api-version") != workloadAPIVersion {
			fail(http.StatusBadRequest)
			return
		}
		data, err := base64.StdEncoding.DecodeString(req.Data)
		if err != nil {
			fail(http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(rw).Encode(map[string]string{"digest": hmacB64(data)})
	default:
		fail(http.StatusNotFound)
	}
}

func hmacB64(data []byte) string {
	key, _ := base64.StdEncoding.DecodeString(testKey)
	h := hmac.New(sha256.New, key)
	h.Write(data)
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// serveUnix serves h on a unix socket and returns its unix:// URI.
func serveUnix(t *testing.T, h http.Handler) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wl") // short: unix socket paths are limited to ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "workload.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return "unix://" + sock
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func edgeEnv(uri string) map[string]string {
	return map[string]string{
		EnvWorkloadURI:           uri,
		EnvIoTHubHostName:        "hub.azure-devices.net",
		EnvGatewayHostName:       "gateway.test",
		EnvDeviceID:              "edge-device",
		EnvModuleID:              "rtsptunnel",
		EnvModuleGenerationID:    "gen1",
		EnvAuthScheme:            "sasToken",
		EnvAPIVersion:            "2022-08-03",
		"IOTEDGE_SOMETHING_ELSE": "x",
	}
}

// checkToken verifies a SAS token's format, resource, expiry and signature.
func checkToken(t *testing.T, tok string, resource string, expiry time.Time) {
	t.Helper()
	rest, ok := strings.CutPrefix(tok, "SharedAccessSignature ")
	if !ok {
		t.Fatalf("token %q lacks the SharedAccessSignature prefix", tok)
	}
	q, err := url.ParseQuery(rest)
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Get("sr"); got != resource {
		t.Errorf("sr = %q, want %q", got, resource)
	}
	if got := q.Get("se"); got != strconv.FormatInt(expiry.Unix(), 10) {
		t.Errorf("se = %q, want %d", got, expiry.Unix())
	}
	want := hmacB64([]byte(url.QueryEscape(resource) + "\n" + strconv.FormatInt(expiry.Unix(), 10)))
	if got := q.Get("sig"); got != want {
		t.Errorf("sig = %q, want %q", got, want)
	}
	if !strings.Contains(rest, "sr="+url.QueryEscape(resource)+"&") {
		t.Errorf("sr is not url-encoded in %q", rest)
	}
}

func TestEdgeWorkload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca := testutil.NewCA(t, "test CA")
	other := testutil.NewCA(t, "test CA")

	for _, scheme := range []string{"unix", "http"} {
		t.Run(scheme, func(t *testing.T) {
			wl := &workload{bundle: string(ca.PEM), module: "rtsptunnel", genID: "gen1"}
			uri := serveUnix(t, wl)
			if scheme == "http" {
				srv := httptest.NewServer(wl)
				t.Cleanup(srv.Close)
				uri = srv.URL + "/"
			}
			id, err := Load(ctx, env(edgeEnv(uri)))
			if err != nil {
				t.Fatal(err)
			}
			if id.Mode != ModeEdge || id.HubHostName != "hub.azure-devices.net" || id.GatewayHostName != "gateway.test" ||
				id.DeviceID != "edge-device" || id.ModuleID != "rtsptunnel" || id.ClientID() != "edge-device/rtsptunnel" {
				t.Fatalf("identity = %+v", id)
			}
			before := time.Now()
			tok, exp, err := id.Token(ctx, 30*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if d := exp.Sub(before); d < 29*time.Minute || d > 31*time.Minute {
				t.Errorf("expiry in %v, want ~30m", d)
			}
			checkToken(t, tok, "hub.azure-devices.net/devices/edge-device/modules/rtsptunnel", exp)
			if wl.signs.Load() != 1 {
				t.Errorf("sign calls = %d, want 1", wl.signs.Load())
			}

			cfg := id.TLSConfig()
			if cfg.ServerName != "gateway.test" || cfg.InsecureSkipVerify {
				t.Fatalf("tls config: server name %q, insecure %v", cfg.ServerName, cfg.InsecureSkipVerify)
			}
			if err := handshake(t, ctx, cfg, ca); err != nil {
				t.Errorf("handshake with the trust bundle's CA: %v", err)
			}
			if err := handshake(t, ctx, id.TLSConfig(), other); err == nil {
				t.Errorf("handshake with a foreign CA succeeded")
			}
		})
	}
}

func TestEdgeWorkloadErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca := testutil.NewCA(t, "test CA")

	tests := []struct {
		name     string
		wl       *workload
		env      func(map[string]string)
		loadErr  string // substring of the Load error, "" = Load succeeds
		tokenErr string // substring of the Token error
	}{
		{name: "trust bundle 404", wl: &workload{bundleErr: 404}, loadErr: "404"},
		{name: "trust bundle 500", wl: &workload{bundleErr: 500}, loadErr: "boom 500"},
		{name: "bad CA", wl: &workload{bundle: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, loadErr: "trust bundle"},
		{name: "empty CA", wl: &workload{bundle: ""}, loadErr: "no PEM certificates"},
		{name: "sign 404", wl: &workload{signErr: 404}, tokenErr: "404"},
		{name: "wrong generation", wl: &workload{}, env: func(m map[string]string) { m[EnvModuleGenerationID] = "other" }, tokenErr: "404"},
		{name: "auth scheme", wl: &workload{}, env: func(m map[string]string) { m[EnvAuthScheme] = "x509" }, loadErr: "sasToken"},
		{name: "bad uri scheme", wl: &workload{}, env: func(m map[string]string) { m[EnvWorkloadURI] = "ftp://x" }, loadErr: "unsupported scheme"},
		{name: "socket missing", wl: &workload{}, env: func(m map[string]string) { m[EnvWorkloadURI] = "unix:///nonexistent/wl.sock" }, loadErr: "trust bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.wl.module, tt.wl.genID = "rtsptunnel", "gen1"
			if tt.wl.bundle == "" && tt.wl.bundleErr == 0 && tt.name != "empty CA" {
				tt.wl.bundle = string(ca.PEM)
			}
			m := edgeEnv(serveUnix(t, tt.wl))
			if tt.env != nil {
				tt.env(m)
			}
			id, err := Load(ctx, env(m))
			if tt.loadErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.loadErr) {
					t.Fatalf("Load error = %v, want it to contain %q", err, tt.loadErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = id.Token(ctx, time.Hour)
			if err == nil || !strings.Contains(err.Error(), tt.tokenErr) {
				t.Fatalf("Token error = %v, want it to contain %q", err, tt.tokenErr)
			}
		})
	}
}

func TestConnectionStringModes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca := testutil.NewCA(t, "test CA")
	caFile := ca.WriteFile(t, "ca.pem")
	badCA := testutil.WriteFile(t, "bad.pem", []byte("not a certificate"))

	tests := []struct {
		name                      string
		env                       map[string]string
		mode                      Mode
		hub, gateway, dev, module string
		resource                  string
		trustsCA                  bool // the TLS config accepts ca's server certificate
	}{
		{
			name: "hubdev",
			env: map[string]string{
				EnvEdgeHubConnectionString: "HostName=hub.azure-devices.net;GatewayHostName=gateway.test;DeviceId=dev1;ModuleId=mod1;SharedAccessKey=" + testKey,
				EnvEdgeModuleCAFile:        caFile,
			},
			mode: ModeHubDev, hub: "hub.azure-devices.net", gateway: "gateway.test", dev: "dev1", module: "mod1",
			resource: "hub.azure-devices.net/devices/dev1/modules/mod1", trustsCA: true,
		},
		{
			name: "device connection string",
			env:  map[string]string{EnvConnectionString: "HostName=hub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + testKey},
			mode: ModeConnectionString, hub: "hub.azure-devices.net", gateway: "hub.azure-devices.net", dev: "dev1",
			resource: "hub.azure-devices.net/devices/dev1",
		},
		{
			name: "module connection string through a gateway with a CA file",
			env: map[string]string{
				EnvConnectionString: "hostname=hub.azure-devices.net; deviceid=dev1; moduleid=mod1; sharedaccesskey=" + testKey + "; GatewayHostName=gateway.test;Extra=1",
				EnvHubCAFile:        caFile,
			},
			mode: ModeConnectionString, hub: "hub.azure-devices.net", gateway: "gateway.test", dev: "dev1", module: "mod1",
			resource: "hub.azure-devices.net/devices/dev1/modules/mod1", trustsCA: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := Load(ctx, env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if id.Mode != tt.mode || id.HubHostName != tt.hub || id.GatewayHostName != tt.gateway || id.DeviceID != tt.dev || id.ModuleID != tt.module {
				t.Fatalf("identity = %+v", id)
			}
			tok, exp, err := id.Token(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Until(exp); d < 59*time.Minute || d > time.Hour {
				t.Errorf("default lifetime: expiry in %v", d)
			}
			checkToken(t, tok, tt.resource, exp)
			err = handshake(t, ctx, id.TLSConfig(), ca)
			if tt.trustsCA && err != nil {
				t.Errorf("handshake: %v", err)
			}
			if !tt.trustsCA && err == nil {
				t.Errorf("handshake with a private CA succeeded without its CA file")
			}
		})
	}

	t.Run("bad CA file", func(t *testing.T) {
		for _, m := range []map[string]string{
			{EnvEdgeHubConnectionString: "HostName=h;GatewayHostName=g;DeviceId=d;ModuleId=m;SharedAccessKey=" + testKey, EnvEdgeModuleCAFile: badCA},
			{EnvConnectionString: "HostName=h;DeviceId=d;SharedAccessKey=" + testKey, EnvHubCAFile: badCA},
			{EnvConnectionString: "HostName=h;DeviceId=d;SharedAccessKey=" + testKey, EnvHubCAFile: "/nonexistent.pem"},
		} {
			if _, err := Load(ctx, env(m)); err == nil {
				t.Errorf("Load(%v) succeeded", m)
			}
		}
	})
}

func TestLoadErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := edgeEnv("unix:///nonexistent.sock")
	without := func(keys ...string) map[string]string {
		m := map[string]string{}
		for k, v := range full {
			m[k] = v
		}
		for _, k := range keys {
			delete(m, k)
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		mode    Mode     // of the MissingError; "" = another error
		missing []string // exact list, in order
		errHas  string   // substring for other errors
	}{
		{name: "nothing", env: map[string]string{"HOSTNAME": "x"}, errHas: "no IoT Hub identity configured"},
		{name: "edge without workload uri", env: without(EnvWorkloadURI), mode: ModeEdge, missing: []string{EnvWorkloadURI}},
		{name: "edge without device and generation", env: without(EnvDeviceID, EnvModuleGenerationID), mode: ModeEdge,
			missing: []string{EnvDeviceID, EnvModuleGenerationID}},
		{name: "edge without auth scheme", env: without(EnvAuthScheme), mode: ModeEdge, missing: []string{EnvAuthScheme}},
		{name: "edge wins over connection string", env: map[string]string{
			EnvDeviceID: "d", EnvConnectionString: "HostName=h;DeviceId=d;SharedAccessKey=" + testKey,
		}, mode: ModeEdge, missing: []string{EnvWorkloadURI, EnvIoTHubHostName, EnvGatewayHostName, EnvModuleID, EnvModuleGenerationID, EnvAuthScheme}},
		{name: "hubdev without CA file", env: map[string]string{
			EnvEdgeHubConnectionString: "HostName=h;GatewayHostName=g;DeviceId=d;ModuleId=m;SharedAccessKey=" + testKey,
		}, mode: ModeHubDev, missing: []string{EnvEdgeModuleCAFile}},
		{name: "hubdev CA file only", env: map[string]string{EnvEdgeModuleCAFile: "/ca.pem"}, mode: ModeHubDev,
			missing: []string{EnvEdgeHubConnectionString}},
		{name: "hubdev without module and key", env: map[string]string{
			EnvEdgeHubConnectionString: "HostName=h;GatewayHostName=g;DeviceId=d", EnvEdgeModuleCAFile: "/ca.pem",
		}, mode: ModeHubDev, missing: []string{EnvEdgeHubConnectionString + ":ModuleId", EnvEdgeHubConnectionString + ":SharedAccessKey"}},
		{name: "connection string without host and key", env: map[string]string{EnvConnectionString: "DeviceId=d"},
			mode: ModeConnectionString, missing: []string{EnvConnectionString + ":HostName", EnvConnectionString + ":SharedAccessKey"}},
		{name: "malformed connection string", env: map[string]string{EnvConnectionString: "HostName=h;garbage"}, errHas: "element 2"},
		{name: "service connection string", env: map[string]string{
			EnvConnectionString: "HostName=h;DeviceId=d;SharedAccessKeyName=iothubowner;SharedAccessKey=" + testKey,
		}, errHas: "service (policy) connection string"},
		{name: "key not base64", env: map[string]string{EnvConnectionString: "HostName=h;DeviceId=d;SharedAccessKey=not*base64"},
			errHas: "not valid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(ctx, env(tt.env))
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), "not*base64") {
				t.Fatalf("error leaks the key: %v", err)
			}
			if tt.mode == "" {
				if !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.errHas)
				}
				if tt.name == "nothing" && !errors.Is(err, ErrNoIdentity) {
					t.Fatalf("error = %v, want ErrNoIdentity", err)
				}
				return
			}
			var me *MissingError
			if !errors.As(err, &me) {
				t.Fatalf("error = %v, want a MissingError", err)
			}
			if me.Mode != tt.mode || strings.Join(me.Missing, ",") != strings.Join(tt.missing, ",") {
				t.Fatalf("missing %s %v, want %s %v", me.Mode, me.Missing, tt.mode, tt.missing)
			}
			for _, k := range tt.missing {
				if !strings.Contains(err.Error(), k) {
					t.Errorf("error %q does not name %s", err, k)
				}
			}
		})
	}
}

func TestTokenCancelled(t *testing.T) {
	// A workload API that never answers: Token must return when ctx is done.
	block := make(chan struct{})
	defer close(block)
	ca := testutil.NewCA(t, "test CA")
	wl := &workload{bundle: string(ca.PEM), module: "rtsptunnel", genID: "gen1"}
	uri := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/sign") {
			select {
			case <-block:
			case <-r.Context().Done():
			}
			return
		}
		wl.ServeHTTP(w, r)
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := Load(ctx, env(edgeEnv(uri)))
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if _, _, err := id.Token(short, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Token error = %v, want DeadlineExceeded", err)
	}
}
