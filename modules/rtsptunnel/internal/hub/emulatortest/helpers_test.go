package emulatortest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	. "github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/hub"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/identity"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

const (
	testDevice = emulator.DefaultDeviceID
	testModule = emulator.DefaultModuleID
)

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
		opts.Logger = testutil.TLogger(t, "emulator")
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
	o := Options{Identity: id, Port: e.MQTTPort(), Logger: testutil.TLogger(t, "hub"),
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
// that it returns nil promptly: within 30 s (handlers 2 s, a publish paho
// holds 10 s).
func startRun(t *testing.T, ctx context.Context, c *testClient) (stop func()) {
	t.Helper()
	return testutil.StartRun(t, ctx, 30*time.Second, c.Run)
}

// runSubscribed starts c (see startRun) and waits until the emulator has
// its subscription to methods for the default module.
func runSubscribed(t *testing.T, ctx context.Context, e *emulator.Emulator, c *testClient) {
	t.Helper()
	startRun(t, ctx, c)
	if err := e.WaitSubscribed(ctx, testDevice, testModule, filterMethods); err != nil {
		t.Fatal(err)
	}
}

// hold is a method handler's body for a call held until the test releases
// it: 200 with body once release is closed, 503 if the call's context ends
// first.
func hold(ctx context.Context, release <-chan struct{}, body []byte) (int, []byte) {
	select {
	case <-release:
		return 200, body
	case <-ctx.Done():
		return 503, nil
	}
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

// The wire constants of package hub that its tests use (see hub/topics.go
// and hub/methods.go).
const filterMethods = "$iothub/methods/POST/#"

// errorJSON is a handler's error answer: err's text as a JSON object.
func errorJSON(err error) []byte {
	b, _ := json.Marshal(map[string]string{"message": err.Error()})
	return b
}

// version returns the "$version" of a twin document, 0 when it has none.
func version(doc []byte) int {
	var m map[string]any
	_ = json.Unmarshal(doc, &m)
	v, _ := m["$version"].(float64)
	return int(v)
}
