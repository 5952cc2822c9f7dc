package iothub

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

// The expected values were computed independently with Python's hmac and
// urllib.parse.quote(safe=”) and cross-checked with openssl dgst -hmac.
func TestSignSASKnownVector(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	exp := time.Unix(1700000000, 0)
	tests := []struct {
		resource, keyName, want string
	}{
		{"myhub.azure-devices.net", "service",
			"SharedAccessSignature sr=myhub.azure-devices.net&sig=sJAIZTF5oG40VHrie96heZ865%2BnR4QavBvHnzxZm8rk%3D&se=1700000000&skn=service"},
		{"myhub.azure-devices.net/devices/dev 1/modules/m", "",
			"SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev%201%2Fmodules%2Fm&sig=KIUlzPLHxCJuv8bzHvNBQODXNGmbqdGTR7k0EOODDXc%3D&se=1700000000"},
	}
	for _, tt := range tests {
		if got := SignSAS(tt.resource, tt.keyName, key, exp); got != tt.want {
			t.Errorf("SignSAS(%q)\n got %s\nwant %s", tt.resource, got, tt.want)
		}
	}
}

func TestEncodeComponent(t *testing.T) {
	if got, want := encodeComponent("a-Z_0.~ /+=!'()*"), "a-Z_0.~%20%2F%2B%3D%21%27%28%29%2A"; got != want {
		t.Fatalf("encodeComponent = %q, want %q", got, want)
	}
}

func TestParseConnectionString(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"HostName=h.example;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5PT0=", ""},
		{" HostName=h.example ; SharedAccessKeyName=x;SharedAccessKey=a2V5PT0=;", ""},
		{"garbage", "malformed"},
		{"HostName=h;SharedAccessKeyName=x", "missing SharedAccessKey"},
		{"SharedAccessKeyName=x;SharedAccessKey=a2V5", "missing HostName"},
		{"HostName=h;SharedAccessKey=a2V5", "missing SharedAccessKeyName"},
		{"HostName=h;SharedAccessKeyName=x;SharedAccessKey=!!!", "not valid base64"},
		{"HostName=h;DeviceId=d;SharedAccessKey=a2V5", "device or module connection string"},
	}
	for _, tt := range tests {
		cs, err := ParseConnectionString(tt.in)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%q: %v", tt.in, err)
			} else if cs.HostName != "h.example" || cs.KeyName == "" || string(cs.Key) != "key==" {
				t.Errorf("%q: parsed %+v", tt.in, cs)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%q: %v, want %q", tt.in, err, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "a2V5") {
			t.Errorf("%q: error leaks the key: %v", tt.in, err)
		}
	}
}

func TestSASRenewal(t *testing.T) {
	now := time.Unix(1700000000, 0)
	s := &SAS{Resource: "hub", KeyName: "service", Key: []byte("k"), TTL: time.Hour, Now: func() time.Time { return now }}
	first, _ := s.Authorization(context.Background())
	if !strings.Contains(first, "se=1700003600") {
		t.Fatalf("first token %q does not expire in an hour", first)
	}
	now = now.Add(44 * time.Minute) // 16 minutes left: still cached
	if again, _ := s.Authorization(context.Background()); again != first {
		t.Fatal("token renewed too early")
	}
	now = now.Add(2 * time.Minute) // 14 minutes left: renew
	renewed, _ := s.Authorization(context.Background())
	if renewed == first || !strings.Contains(renewed, "se=1700006360") {
		t.Fatalf("token not renewed: %q", renewed)
	}
}

type fakeCredential struct {
	mu     sync.Mutex
	calls  int
	scopes []string
	tok    azcore.AccessToken
	err    error
}

func (f *fakeCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.scopes = o.Scopes
	return f.tok, f.err
}

func TestEntra(t *testing.T) {
	now := time.Unix(1700000000, 0)
	cred := &fakeCredential{tok: azcore.AccessToken{Token: "t1", ExpiresOn: now.Add(time.Hour)}}
	e := &Entra{Credential: cred, Now: func() time.Time { return now }}
	got, err := e.Authorization(context.Background())
	if err != nil || got != "Bearer t1" {
		t.Fatalf("Authorization = %q, %v", got, err)
	}
	if len(cred.scopes) != 1 || cred.scopes[0] != "https://iothubs.azure.net/.default" {
		t.Fatalf("scopes = %q", cred.scopes)
	}
	now = now.Add(54 * time.Minute)
	e.Authorization(context.Background())
	if cred.calls != 1 {
		t.Fatalf("GetToken called %d times, want cached", cred.calls)
	}
	now = now.Add(2 * time.Minute) // within 5 minutes of expiry
	cred.tok = azcore.AccessToken{Token: "t2", ExpiresOn: now.Add(time.Hour)}
	if got, _ := e.Authorization(context.Background()); got != "Bearer t2" || cred.calls != 2 {
		t.Fatalf("Authorization = %q after %d calls, want a refreshed token", got, cred.calls)
	}
	cred.err = errors.New("no identity")
	now = now.Add(2 * time.Hour)
	if _, err := e.Authorization(context.Background()); err == nil || !strings.Contains(err.Error(), "no identity") {
		t.Fatalf("error = %v", err)
	}
}

// hub is an httptest IoT Hub stand-in that records the last request.
type hub struct {
	mu      sync.Mutex
	path    string // escaped path
	query   url.Values
	auth    string
	body    map[string]any
	respond func(w http.ResponseWriter)
}

func (h *hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.path, h.query, h.auth = r.URL.EscapedPath(), r.URL.Query(), r.Header.Get("Authorization")
	h.body = nil
	json.Unmarshal(b, &h.body)
	respond := h.respond
	h.mu.Unlock()
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	respond(w)
}

func reply(status int, body string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

type staticAuth string

func (s staticAuth) Authorization(context.Context) (string, error) { return string(s), nil }

func newTestClient(t *testing.T, h http.Handler) *Client {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return &Client{BaseURL: u, Auth: staticAuth("SharedAccessSignature sr=x"), HTTPClient: srv.Client()}
}

func TestInvokeMethod(t *testing.T) {
	const classic404 = `{"Message":"{\"errorCode\":404103,\"trackingId\":\"abc\",\"message\":\"Timed out waiting for device to connect.\",\"info\":{\"timeout\":\"00:00:00\"},\"timestampUtc\":\"2024-01-01T00:00:00Z\"}","ExceptionMessage":""}`
	tests := []struct {
		name       string
		device     string
		module     string
		respond    func(http.ResponseWriter)
		wantPath   string
		wantStatus int    // module status on success
		wantErr    error  // errors.Is target
		wantCode   int    // *Error's HTTP status
		wantText   string // substring of the error
	}{
		{name: "module ok", device: "edge1", module: "rtsptunnel",
			respond:  reply(200, `{"status":200,"payload":{"sessionId":"s","target":"10.0.0.2:554"}}`),
			wantPath: "/twins/edge1/modules/rtsptunnel/methods", wantStatus: 200},
		{name: "device ok, escaped id", device: "dev 1/x", module: "",
			respond:  reply(200, `{"status":200,"payload":{}}`),
			wantPath: "/twins/dev%201%2Fx/methods", wantStatus: 200},
		{name: "module refuses", device: "d", module: "m",
			respond:  reply(200, `{"status":400,"payload":{"code":"400","target":"127.0.0.1:554","message":"Could not connect to RTSP endpoint"}}`),
			wantPath: "/twins/d/modules/m/methods", wantStatus: 400},
		{name: "offline classic body", device: "d", module: "m", respond: reply(404, classic404),
			wantErr: ErrDeviceNotOnline, wantCode: 404, wantText: "Timed out waiting for device to connect"},
		{name: "offline flat body", device: "d", module: "m",
			respond: reply(404, `{"errorCode":404103,"message":"Device is not online"}`),
			wantErr: ErrDeviceNotOnline, wantCode: 404, wantText: "404 Not Found"},
		{name: "timeout", device: "d", module: "m",
			respond: reply(504, `{"errorCode":"504101","message":"Timed out waiting for the response from device."}`),
			wantErr: ErrTimeout, wantCode: 504, wantText: "504101"},
		{name: "unauthorized", device: "d", module: "m", respond: reply(401, `{"Message":"ErrorCode:IotHubUnauthorizedAccess;Unauthorized"}`),
			wantCode: 401, wantText: "IotHubUnauthorizedAccess"},
		{name: "not found", device: "d", module: "m", respond: reply(404, `{"errorCode":404010,"message":"module not found"}`),
			wantCode: 404, wantText: "module not found"},
		{name: "garbage 200", device: "d", module: "m", respond: reply(200, `<html>`), wantText: "failed to decode method response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testutil.Context(t, 10*time.Second)
			h := &hub{respond: tt.respond}
			c := newTestClient(t, h)
			resp, err := c.InvokeMethod(ctx, tt.device, tt.module, MethodRequest{
				MethodName:               "tunnelOpen",
				Payload:                  map[string]any{"remoteEndpoint": "wss://r/tunnels/1", "remoteAuthorizationToken": "secret", "localPort": 554},
				ResponseTimeoutInSeconds: 15,
			})
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.auth != "SharedAccessSignature sr=x" || h.query.Get("api-version") != "2021-04-12" {
				t.Errorf("auth %q, query %v", h.auth, h.query)
			}
			if h.body["methodName"] != "tunnelOpen" || h.body["responseTimeoutInSeconds"] != 15.0 || h.body["connectTimeoutInSeconds"] != 0.0 {
				t.Errorf("request body %v", h.body)
			}
			if p, _ := h.body["payload"].(map[string]any); p["localPort"] != 554.0 {
				t.Errorf("payload %v", h.body["payload"])
			}
			if tt.wantPath != "" && h.path != tt.wantPath {
				t.Errorf("path %q, want %q", h.path, tt.wantPath)
			}
			if tt.wantStatus != 0 {
				if err != nil {
					t.Fatalf("InvokeMethod: %v", err)
				}
				if resp.Status != tt.wantStatus || !json.Valid(resp.Payload) {
					t.Fatalf("response %d %s", resp.Status, resp.Payload)
				}
				return
			}
			if err == nil {
				t.Fatalf("InvokeMethod succeeded: %+v", resp)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v is not %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && (errors.Is(err, ErrDeviceNotOnline) || errors.Is(err, ErrTimeout)) {
				t.Errorf("error %v matches a sentinel it should not", err)
			}
			// core retries what DeviceNotOnline reports, without importing this package.
			var nr interface{ DeviceNotOnline() bool }
			if got := errors.As(err, &nr) && nr.DeviceNotOnline(); got != (tt.wantErr == ErrDeviceNotOnline) {
				t.Errorf("error %v: DeviceNotOnline() = %v", err, got)
			}
			var he *Error
			if tt.wantCode != 0 && (!errors.As(err, &he) || he.StatusCode != tt.wantCode) {
				t.Errorf("error %v: want *Error with status %d", err, tt.wantCode)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q lacks %q", err, tt.wantText)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the token: %v", err)
			}
		})
	}
}

// TestInvokeMethodContext: the call ends with its context. The hub holds
// the answer for a minute; a client that ignored its context would return
// then, three times the 20 s bound, while the 200 ms context is a hundred
// times shorter than the bound, which no load reaches.
func TestInvokeMethodContext(t *testing.T) {
	release := make(chan struct{})
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}))
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.InvokeMethod(ctx, "d", "m", MethodRequest{MethodName: "tunnelOpen", ResponseTimeoutInSeconds: 30})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("InvokeMethod returned after %v: it ignored its context", d)
	}
}

func TestNewHTTPClientTrust(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply(200, `{"status":200,"payload":null}`)(w)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusting client's handshake failure
	srv.StartTLS()
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	ca := testutil.CertPEM(srv.Certificate().Raw)
	ctx := testutil.Context(t, 10*time.Second)

	untrusting, err := NewHTTPClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{BaseURL: u, Auth: staticAuth("x"), HTTPClient: untrusting}
	if _, err := c.InvokeMethod(ctx, "d", "", MethodRequest{MethodName: "m"}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted server: %v, want a certificate error", err)
	}
	trusting, err := NewHTTPClient(ca)
	if err != nil {
		t.Fatal(err)
	}
	c.HTTPClient = trusting
	if _, err := c.InvokeMethod(ctx, "d", "", MethodRequest{MethodName: "m"}); err != nil {
		t.Fatalf("trusted server: %v", err)
	}
	if _, err := NewHTTPClient([]byte("not pem")); err == nil {
		t.Fatal("NewHTTPClient accepted a file without certificates")
	}
}
