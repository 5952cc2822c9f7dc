package emulator_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/sas"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/testutil"
)

// restClient calls the emulator's REST API the way the relay does.
type restClient struct {
	t    *testing.T
	e    *emulator.Emulator
	http *http.Client
	auth string
}

func newREST(t *testing.T, e *emulator.Emulator) *restClient {
	return &restClient{
		t:    t,
		e:    e,
		http: &http.Client{Transport: &http.Transport{TLSClientConfig: e.TLSConfig(e.HubHostName())}, Timeout: 20 * time.Second},
		auth: serviceToken(t, e, time.Now().Add(time.Hour)),
	}
}

// serviceToken mints a token from the service connection string.
func serviceToken(t *testing.T, e *emulator.Emulator, expiry time.Time) string {
	t.Helper()
	var key []byte
	for _, kv := range strings.Split(e.ServiceConnectionString(), ";") {
		if k, v, _ := strings.Cut(kv, "="); k == "SharedAccessKey" {
			key = b64(t, v)
		}
	}
	return sas.New(key, e.HubHostName(), emulator.ServicePolicyName, expiry)
}

type restResult struct {
	status int
	header http.Header
	body   []byte
}

func (c *restClient) do(method, path string, body any, hdr map[string]string) restResult {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "https://"+c.e.HTTPSAddr()+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return restResult{resp.StatusCode, resp.Header, b}
}

func TestRESTAuth(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{TrustedBearerTokens: []string{"trusted-token"}})
	good := serviceToken(t, e, time.Now().Add(time.Hour))
	tests := []struct {
		name, auth string
		want       int
	}{
		{"service SAS", good, 200},
		{"expired SAS", serviceToken(t, e, time.Now().Add(-time.Minute)), 401},
		{"wrong signature", sas.New([]byte("wrong"), e.HubHostName(), "service", time.Now().Add(time.Hour)), 401},
		{"unknown policy", strings.Replace(good, "skn=service", "skn=iothubowner", 1), 401},
		{"no policy", sas.New(keyOf(t, e, testDevice, testModule), e.HubHostName(), "", time.Now().Add(time.Hour)), 401},
		{"device token", sas.New(keyOf(t, e, testDevice, testModule), "x/devices/"+testDevice, "", time.Now().Add(time.Hour)), 401},
		{"trusted bearer", "Bearer trusted-token", 200},
		{"untrusted bearer", "Bearer other-token", 401},
		{"none", "", 401},
		{"garbage", "Basic Zm9vOmJhcg==", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newREST(t, e)
			c.auth = tt.auth
			r := c.do("GET", "/twins/"+testDevice+"/modules/"+testModule+"?api-version=2021-04-12", nil, nil)
			if r.status != tt.want {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tt.want)
			}
			if tt.want == 401 {
				var body struct{ Message string }
				_ = json.Unmarshal(r.body, &body)
				if body.Message != "ErrorCode:IotHubUnauthorizedAccess;Unauthorized" {
					t.Errorf("401 body %s", r.body)
				}
			}
		})
	}
}

func TestRESTMethods(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{Identities: []emulator.Identity{
		{DeviceID: testDevice, ModuleID: testModule},
		{DeviceID: "plain"},
		{DeviceID: "silent"},
	}})
	connect(t, e, testDevice, testModule).serveMethods(echo)
	connect(t, e, "plain", "").serveMethods(echo)
	connect(t, e, "silent", "").serveMethods(func(string, []byte) (int, []byte) { select {} })
	c := newREST(t, e)
	const q = "?api-version=2021-04-12"
	mod := "/twins/" + testDevice + "/modules/" + testModule + "/methods" + q

	tests := []struct {
		name       string
		path       string
		body       any
		wantStatus int
		wantBody   string // exact JSON for 200
		wantCode   string // iothub-errorcode for errors
	}{
		{name: "module method", path: mod, body: map[string]any{"methodName": "tunnelOpen", "payload": map[string]any{"localPort": 554}, "responseTimeoutInSeconds": 30},
			wantStatus: 200, wantBody: `{"payload":{"localPort":554},"status":200}`},
		{name: "module status passthrough", path: mod, body: map[string]any{"methodName": "tunnelOpen", "payload": map[string]any{"status": 400}},
			wantStatus: 200, wantBody: `{"payload":{"status":400},"status":400}`},
		{name: "device method", path: "/twins/plain/methods" + q, body: map[string]any{"methodName": "m", "payload": "hi"},
			wantStatus: 200, wantBody: `{"payload":"hi","status":200}`},
		{name: "unknown module", path: "/twins/" + testDevice + "/modules/other/methods" + q, body: map[string]any{"methodName": "m"},
			wantStatus: 404, wantCode: "ModuleNotFound"},
		{name: "response timeout too small", path: mod, body: map[string]any{"methodName": "m", "responseTimeoutInSeconds": 4},
			wantStatus: 400, wantCode: "ArgumentInvalid"},
		{name: "response timeout too big", path: mod, body: map[string]any{"methodName": "m", "responseTimeoutInSeconds": 301},
			wantStatus: 400, wantCode: "ArgumentInvalid"},
		{name: "connect timeout too big", path: mod, body: map[string]any{"methodName": "m", "connectTimeoutInSeconds": 301},
			wantStatus: 400, wantCode: "ArgumentInvalid"},
		{name: "no method name", path: mod, body: map[string]any{"payload": 1},
			wantStatus: 400, wantCode: "ArgumentInvalid"},
		{name: "payload over 128 KB", path: mod, body: map[string]any{"methodName": "m", "payload": strings.Repeat("x", 128*1024)},
			wantStatus: 400, wantCode: "ArgumentInvalid"},
		{name: "no api-version", path: "/twins/plain/methods", body: map[string]any{"methodName": "m"},
			wantStatus: 400, wantCode: "InvalidProtocolVersion"},
		{name: "unknown path", path: "/devices/plain" + q, wantStatus: 404, wantCode: "NotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := "POST"
			if tt.body == nil {
				method = "GET"
			}
			r := c.do(method, tt.path, tt.body, nil)
			if r.status != tt.wantStatus {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tt.wantStatus)
			}
			if tt.wantBody != "" && string(r.body) != tt.wantBody {
				t.Errorf("body %s, want %s", r.body, tt.wantBody)
			}
			if tt.wantCode != "" {
				if got := r.header.Get("iothub-errorcode"); got != tt.wantCode {
					t.Errorf("iothub-errorcode %q, want %q (%s)", got, tt.wantCode, r.body)
				}
				var body struct{ Message, ExceptionMessage string }
				if err := json.Unmarshal(r.body, &body); err != nil || !strings.HasPrefix(body.Message, "ErrorCode:"+tt.wantCode+";") {
					t.Errorf("error body %s", r.body)
				}
			}
		})
	}

	// 404103 and 504101 use IoT Hub's nested error document.
	nested := []struct {
		name       string
		path       string
		body       map[string]any
		wantStatus int
		wantCode   int
		wantHeader string
		wantInfo   string
	}{
		{name: "device offline", path: "/twins/" + testDevice + "/methods" + q, body: map[string]any{"methodName": "m"},
			wantStatus: 404, wantCode: 404103, wantHeader: "DeviceNotOnline", wantInfo: "00:00:00"},
		{name: "response timeout", path: "/twins/silent/methods" + q, body: map[string]any{"methodName": "m", "responseTimeoutInSeconds": 5},
			wantStatus: 504, wantCode: 504101, wantHeader: "GatewayTimeout", wantInfo: "00:00:05"},
	}
	for _, tt := range nested {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := c.do("POST", tt.path, tt.body, nil)
			if r.status != tt.wantStatus || r.header.Get("iothub-errorcode") != tt.wantHeader {
				t.Fatalf("status %d %q %s", r.status, r.header.Get("iothub-errorcode"), r.body)
			}
			var outer struct{ Message, ExceptionMessage string }
			if err := json.Unmarshal(r.body, &outer); err != nil {
				t.Fatal(err)
			}
			var inner struct {
				ErrorCode    int               `json:"errorCode"`
				TrackingID   string            `json:"trackingId"`
				Message      string            `json:"message"`
				Info         map[string]string `json:"info"`
				TimestampUTC string            `json:"timestampUtc"`
			}
			if err := json.Unmarshal([]byte(outer.Message), &inner); err != nil {
				t.Fatalf("Message is not a JSON document: %s", r.body)
			}
			if inner.ErrorCode != tt.wantCode || inner.Info["timeout"] != tt.wantInfo || inner.TrackingID == "" || inner.Message == "" {
				t.Errorf("inner error %+v", inner)
			}
		})
	}
}

func TestRESTTwin(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{})
	ctx := testutil.Context(t)
	c := newREST(t, e)
	path := "/twins/" + testDevice + "/modules/" + testModule + "?api-version=2021-04-12"
	d, err := dial(t, e, "tls://"+e.MQTTAddr(), newCreds(t, e, testDevice, testModule))
	if err != nil {
		t.Fatal(err)
	}
	d.serveTwin()
	if _, err := d.patchReported(ctx, `{"state":"ok"}`); err != nil {
		t.Fatal(err)
	}

	type twinDoc struct {
		DeviceID, ModuleID, Etag, ConnectionState, ModelID string
		Version                                            int
		Tags                                               map[string]any
		Properties                                         struct {
			Desired, Reported map[string]any
		}
	}
	get := func() twinDoc {
		r := c.do("GET", path, nil, nil)
		if r.status != 200 {
			t.Fatalf("GET %d %s", r.status, r.body)
		}
		var td twinDoc
		if err := json.Unmarshal(r.body, &td); err != nil {
			t.Fatal(err)
		}
		return td
	}
	td := get()
	if td.DeviceID != testDevice || td.ModuleID != testModule || td.ConnectionState != "Connected" || td.ModelID != testModel {
		t.Errorf("twin %+v", td)
	}
	if td.Properties.Reported["state"] != "ok" || td.Properties.Reported["$metadata"] == nil || td.Properties.Reported["$version"] != 2.0 {
		t.Errorf("reported %v", td.Properties.Reported)
	}

	// The Node SDK sends the etag it read, quoted; a stale one gets 412.
	r := c.do("PATCH", path, map[string]any{"properties": map[string]any{"desired": map[string]any{"logLevel": "debug"}}, "tags": map[string]any{"site": "a"}},
		map[string]string{"If-Match": `"` + td.Etag + `"`})
	if r.status != 200 {
		t.Fatalf("PATCH %d %s", r.status, r.body)
	}
	select {
	case push := <-d.desired:
		if string(push) != `{"$version":2,"logLevel":"debug"}` {
			t.Errorf("push %s", push)
		}
	case <-ctx.Done():
		t.Fatal("no desired push after a REST PATCH")
	}
	after := get()
	if after.Etag == td.Etag || after.Properties.Desired["logLevel"] != "debug" || after.Tags["site"] != "a" || after.Properties.Desired["$version"] != 2.0 {
		t.Errorf("after PATCH: %+v", after)
	}
	if r := c.do("PATCH", path, map[string]any{"properties": map[string]any{"desired": map[string]any{"x": 1}}}, map[string]string{"If-Match": `"` + td.Etag + `"`}); r.status != 412 {
		t.Errorf("stale etag: %d %s", r.status, r.body)
	}
	if r := c.do("PATCH", path, map[string]any{"properties": map[string]any{"desired": map[string]any{"x": 1}}}, map[string]string{"If-Match": "*"}); r.status != 200 {
		t.Errorf("If-Match *: %d %s", r.status, r.body)
	}
	for name, body := range map[string]any{
		"reported": map[string]any{"properties": map[string]any{"reported": map[string]any{"x": 1}}},
		"bad key":  map[string]any{"properties": map[string]any{"desired": map[string]any{"a.b": 1}}},
		"not JSON": "x",
	} {
		if r := c.do("PATCH", path, body, nil); r.status != 400 {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if r := c.do("GET", "/twins/ghost?api-version=2021-04-12", nil, nil); r.status != 404 || r.header.Get("iothub-errorcode") != "DeviceNotFound" {
		t.Errorf("unknown device: %d %s", r.status, r.body)
	}
	if r := c.do("GET", "/twins/"+testDevice+"?api-version=2021-04-12", nil, nil); r.status != 200 || !strings.Contains(string(r.body), `"iotEdge":true`) {
		t.Errorf("edge device twin: %d %s", r.status, r.body)
	}
}
