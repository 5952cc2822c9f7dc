package emulatortest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	. "github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/hub"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/identity"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

const (
	testDevice = emulator.DefaultDeviceID
	testModule = emulator.DefaultModuleID
)

// testContext returns a context that ends with the test or after d.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// shortDir returns a fresh directory with a short path (the emulator's
// workload socket must fit in a sockaddr_un).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hub")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startEmulator starts an emulator on free loopback ports, closed at cleanup.
func startEmulator(t *testing.T, opts emulator.Options) *emulator.Emulator {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = shortDir(t)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t, "emulator")
	}
	e, err := emulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// envMap returns a function that turns KEY=VALUE lines into a getenv
// function, failing t on err; use it as envMap(t)(e.ModuleEnv(d, m)).
func envMap(t *testing.T) func(lines []string, err error) func(string) string {
	return func(lines []string, err error) func(string) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, l := range lines {
			k, v, _ := strings.Cut(l, "=")
			m[k] = v
		}
		return func(k string) string { return m[k] }
	}
}

// identityMode names the environments the emulator writes.
type identityMode string

const (
	modeEdge         identityMode = "edge"
	modeHubDev       identityMode = "hubdev"
	modeDeviceString identityMode = "device connection string"
	modeModuleString identityMode = "module connection string"
)

// loadIdentity loads the identity of the emulator's default module (or its
// device) from the environment of mode.
func loadIdentity(t *testing.T, ctx context.Context, e *emulator.Emulator, mode identityMode) *identity.Identity {
	t.Helper()
	var getenv func(string) string
	switch mode {
	case modeEdge:
		getenv = envMap(t)(e.ModuleEnv(testDevice, testModule))
	case modeHubDev:
		getenv = envMap(t)(e.HubDevEnv(testDevice, testModule))
	case modeDeviceString:
		getenv = envMap(t)(e.DeviceEnv(testDevice, ""))
	case modeModuleString:
		cs, err := e.ConnectionString(testDevice, testModule)
		getenv = envMap(t)([]string{identity.EnvConnectionString + "=" + cs, identity.EnvHubCAFile + "=" + e.CAFile()}, err)
	}
	id, err := identity.Load(ctx, getenv)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// events records the client's callbacks.
type events struct {
	mu          sync.Mutex
	changes     []bool
	twins       []json.RawMessage
	patches     []json.RawMessage
	connected   int
	onConnected func() // optional extra work in OnConnected
	changed     chan struct{}
}

func newEvents() *events { return &events{changed: make(chan struct{}, 1)} }

func (ev *events) note() {
	select {
	case ev.changed <- struct{}{}:
	default:
	}
}

func (ev *events) hook(o *Options) {
	o.OnConnectionChange = func(c bool) {
		ev.mu.Lock()
		ev.changes = append(ev.changes, c)
		ev.mu.Unlock()
		ev.note()
	}
	o.OnTwin = func(d json.RawMessage) {
		ev.mu.Lock()
		ev.twins = append(ev.twins, bytes.Clone(d))
		ev.mu.Unlock()
		ev.note()
	}
	o.OnDesiredPatch = func(p json.RawMessage) {
		ev.mu.Lock()
		ev.patches = append(ev.patches, bytes.Clone(p))
		ev.mu.Unlock()
		ev.note()
	}
	o.OnConnected = func() {
		if ev.onConnected != nil {
			ev.onConnected()
		}
		ev.mu.Lock()
		ev.connected++
		ev.mu.Unlock()
		ev.note()
	}
}

// wait polls cond (under ev.mu) until it holds or ctx ends.
func (ev *events) wait(t *testing.T, ctx context.Context, what string, cond func(ev *events) bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ev.mu.Lock()
		ok := cond(ev)
		ev.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-ev.changed:
		case <-tick.C:
		}
	}
}

// testClient is a Client with the logger it was made with, whose records
// the tests count.
type testClient struct {
	*Client
	log *slog.Logger
}

// newTestClient returns a client for id against e with fast retries.
func newTestClient(t *testing.T, e *emulator.Emulator, id *identity.Identity, mutate func(*Options)) *testClient {
	t.Helper()
	o := Options{Identity: id, Port: e.MQTTPort(), Logger: testLogger(t, "hub"),
		RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond}
	if mutate != nil {
		mutate(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return &testClient{Client: c, log: o.Logger}
}

// startRun runs c.Run until the test ends (or stop is called) and checks
// that it returns nil promptly.
func startRun(t *testing.T, ctx context.Context, c *testClient) (stop func()) {
	t.Helper()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(30 * time.Second): // handlers 2 s, a publish paho holds 10 s
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// call invokes a method through the emulator and fails the test on a hub error.
func call(t *testing.T, ctx context.Context, e *emulator.Emulator, method string, payload string) (int, string) {
	t.Helper()
	var p json.RawMessage
	if payload != "" {
		p = json.RawMessage(payload)
	}
	status, resp, err := e.InvokeMethod(ctx, testDevice, testModule, method, p, 10*time.Second)
	if err != nil {
		t.Fatalf("invoke %s: %v", method, err)
	}
	return status, string(resp)
}

// invokeRetrying invokes a method through the emulator as the relay does: a
// 404103 from the hub (the module is not connected or not subscribed to
// methods: it never saw the call) is retried with a short backoff within
// timeout; anything else, 504 included (the module may have acted), is the
// result. It returns how many times it retried.
func invokeRetrying(ctx context.Context, e *emulator.Emulator, method string, payload json.RawMessage, timeout time.Duration) (status int, resp json.RawMessage, retries int, err error) {
	deadline := time.Now().Add(timeout)
	wait := 20 * time.Millisecond
	for {
		status, resp, err = e.InvokeMethod(ctx, testDevice, testModule, method, payload, time.Until(deadline))
		var he *emulator.HubError
		if !errors.As(err, &he) || he.Code != emulator.CodeDeviceNotOnline || time.Now().Add(wait).After(deadline) {
			return status, resp, retries, err
		}
		retries++
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return status, resp, retries, err
		}
		wait = min(2*wait, 250*time.Millisecond)
	}
}

// testLogger writes to t.Log at debug level; after the test it discards.
func testLogger(t *testing.T, name string) *slog.Logger {
	h := &tHandler{t: t, name: name, level: slog.LevelDebug}
	t.Cleanup(func() {
		h.mu.Lock()
		h.done = true
		h.mu.Unlock()
	})
	return slog.New(h)
}

// tHandler is a slog.Handler that logs through testing.T and counts
// messages, so tests can assert that something was logged.
type tHandler struct {
	t     *testing.T
	name  string
	level slog.Level
	attrs []slog.Attr
	mu    sync.Mutex
	done  bool
	count map[string]int
	last  map[string]string // the last line logged with each message
	root  *tHandler
}

func (h *tHandler) rootH() *tHandler {
	if h.root != nil {
		return h.root
	}
	return h
}

func (h *tHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *tHandler) Handle(_ context.Context, r slog.Record) error {
	root := h.rootH()
	var b strings.Builder
	b.WriteString(root.name + " " + r.Level.String() + " " + r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	root.mu.Lock()
	defer root.mu.Unlock()
	if root.count == nil {
		root.count = map[string]int{}
	}
	root.count[r.Message]++
	if root.last == nil {
		root.last = map[string]string{}
	}
	root.last[r.Message] = b.String()
	if !root.done {
		root.t.Log(b.String())
	}
	return nil
}

func (h *tHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &tHandler{root: h.rootH(), level: h.level, attrs: append(append([]slog.Attr(nil), h.attrs...), a...)}
}

func (h *tHandler) WithGroup(string) slog.Handler { return h }

// logged returns how often message was logged through l.
func logged(l *slog.Logger, message string) int {
	h := l.Handler().(*tHandler).rootH()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[message]
}

// lastLogged returns the last line logged through l with message, attributes
// included.
func lastLogged(l *slog.Logger, message string) string {
	h := l.Handler().(*tHandler).rootH()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last[message]
}

// writeFile writes b to a new file in a temporary directory.
func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The wire constants of package hub that its tests use (see hub/topics.go
// and hub/methods.go).
const filterMethods = "$iothub/methods/POST/#"

// errorBody is the error shape of the original video service, as hub
// answers it: {"code":"<status>","target":..,"message":..}.
func errorBody(status int, target, message string) []byte {
	b, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Target  string `json:"target,omitempty"`
		Message string `json:"message"`
	}{strconv.Itoa(status), target, message})
	return b
}

// desiredVersion returns the $version of a desired-properties document.
func desiredVersion(b []byte) (int, bool) {
	var v struct {
		Version *int `json:"$version"`
	}
	if json.Unmarshal(b, &v) != nil || v.Version == nil {
		return 0, false
	}
	return *v.Version, true
}

// isCertificateError reports whether err is a TLS certificate verification failure.
func isCertificateError(err error) bool {
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		cerr x509.CertificateInvalidError
	)
	return errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &cerr)
}
