package emulatortest

// Tests against the offline IoT Hub / edgeHub emulator (tools/edgeemu), one
// or more per trap of DESIGN.md section 5. They import the emulator through
// the go.work workspace; the product code never does.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	. "github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/hub"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/identity"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

// echo answers 200 with the raw payload (or {} when it is empty).
func echo(_ context.Context, p []byte) (int, []byte) { return 200, p }

// TestIdentityModes connects in every identity mode and checks what the hub
// sees (traps 3 and 9): the documented username with api-version 2021-04-12
// and the model id, the TLS roots of the identity, methods and twin working.
func TestIdentityModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []identityMode{modeEdge, modeHubDev, modeDeviceString, modeModuleString} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			ctx := testutil.Context(t, 30*time.Second)
			e := startEmulator(t, emulator.Options{})
			id := loadIdentity(t, ctx, e, mode)
			c := newTestClient(t, e, id, nil)
			c.Handle("echo", echo)
			startRun(t, ctx, c)
			dev, mod := testDevice, id.ModuleID
			if err := e.WaitSubscribed(ctx, dev, mod, filterMethods); err != nil {
				t.Fatal(err)
			}
			if got := e.ModelID(dev, mod); got != DefaultModelID {
				t.Errorf("hub saw model id %q, want %q", got, DefaultModelID)
			}
			if info, _ := e.ConnInfo(dev, mod); info.APIVersion != APIVersion || info.NonstandardUsername {
				t.Errorf("hub saw api-version %q, nonstandard username %v", info.APIVersion, info.NonstandardUsername)
			}
			status, resp, err := e.InvokeMethod(ctx, dev, mod, "echo", json.RawMessage(`{"a":1}`), 10*time.Second)
			if err != nil || status != 200 || resp == nil || string(resp) != `{"a":1}` {
				t.Errorf("echo: %d %s %v", status, resp, err)
			}
			v, err := c.UpdateReported(ctx, json.RawMessage(`{"mode":"`+string(mode)+`"}`))
			if err != nil || v < 1 {
				t.Fatalf("UpdateReported: %d %v", v, err)
			}
			_, reported, err := e.Twin(dev, mod)
			if err != nil || !strings.Contains(string(reported), string(mode)) {
				t.Errorf("reported = %s, %v", reported, err)
			}
		})
	}
}

// TestBurstWhileHandlerBlocks is trap 1: 20 concurrent calls arrive while a
// handler is blocked; all are answered, then the blocked one too.
func TestBurstWhileHandlerBlocks(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 30*time.Second)
	e := startEmulator(t, emulator.Options{})
	c := newTestClient(t, e, loadIdentity(t, ctx, e, modeEdge), nil)
	release := make(chan struct{})
	entered := make(chan struct{})
	c.Handle("slow", func(ctx context.Context, _ []byte) (int, []byte) {
		close(entered)
		return hold(ctx, release, []byte(`{"slow":true}`))
	})
	c.Handle("echo", echo)
	runSubscribed(t, ctx, e, c)
	slowDone := make(chan string, 1)
	go func() {
		status, resp, err := e.InvokeMethod(ctx, testDevice, testModule, "slow", nil, 20*time.Second)
		slowDone <- fmt.Sprint(status, " ", string(resp), " ", err)
	}()
	<-entered

	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf(`{"i":%d}`, i)
			status, resp, err := e.InvokeMethod(ctx, testDevice, testModule, "echo", json.RawMessage(want), 10*time.Second)
			if err != nil || status != 200 || string(resp) != want {
				errs <- fmt.Sprintf("call %d: %d %s %v", i, status, resp, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	close(release)
	if got := <-slowDone; got != `200 {"slow":true} <nil>` {
		t.Errorf("slow call: %s", got)
	}
}

// TestTwinFromHandler is trap 2: a handler reads and patches the twin.
func TestTwinFromHandler(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 30*time.Second)
	e := startEmulator(t, emulator.Options{})
	c := newTestClient(t, e, loadIdentity(t, ctx, e, modeEdge), nil)
	c.Handle("twin", func(ctx context.Context, p []byte) (int, []byte) {
		v, err := c.UpdateReported(ctx, json.RawMessage(`{"fromHandler":`+string(p)+`}`))
		if err != nil {
			return 500, errorJSON(err)
		}
		_, reported, err := c.GetTwin(ctx)
		if err != nil {
			return 500, errorJSON(err)
		}
		return 200, []byte(fmt.Sprintf(`{"version":%d,"reported":%s}`, v, reported))
	})
	runSubscribed(t, ctx, e, c)
	for i := range 3 {
		status, resp := call(t, ctx, e, "twin", fmt.Sprint(i))
		var r struct {
			Version  int
			Reported struct{ FromHandler int }
		}
		if status != 200 || json.Unmarshal([]byte(resp), &r) != nil || r.Reported.FromHandler != i || r.Version < 1 {
			t.Fatalf("call %d: %d %s", i, status, resp)
		}
	}
}

// TestMethodResults is trap 6: unknown methods, panics, empty and invalid
// handler bodies and bad statuses all get a JSON answer, and the client goes
// on working.
func TestMethodResults(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 30*time.Second)
	e := startEmulator(t, emulator.Options{})
	c := newTestClient(t, e, loadIdentity(t, ctx, e, modeEdge), nil)
	c.Handle("echo", echo)
	c.Handle("panic", func(context.Context, []byte) (int, []byte) { panic("boom") })
	c.Handle("empty", func(context.Context, []byte) (int, []byte) { return 204, nil })
	c.Handle("notjson", func(context.Context, []byte) (int, []byte) { return 200, []byte("hello") })
	c.Handle("badstatus", func(context.Context, []byte) (int, []byte) { return 0, []byte(`{}`) })
	c.Handle("raw", func(_ context.Context, p []byte) (int, []byte) {
		b, _ := json.Marshal(string(p))
		return 200, []byte(`{"raw":` + string(b) + `}`)
	})
	runSubscribed(t, ctx, e, c)
	tests := []struct {
		method, payload string
		status          int
		resp            string
	}{
		{"nosuch", `{}`, 404, `{"code":"404","target":"nosuch","message":"method is not implemented"}`},
		{"panic", `{}`, 500, `{"code":"500","message":"internal error"}`},
		{"empty", `{}`, 204, `{}`},
		{"notjson", `{}`, 500, `{"code":"500","message":"internal error"}`},
		{"badstatus", `{}`, 500, `{"code":"500","message":"internal error"}`},
		{"raw", `[1, 2]`, 200, `{"raw":"[1,2]"}`}, // the emulator compacts requests
		{"raw", `"text"`, 200, `{"raw":"\"text\""}`},
		{"raw", ``, 200, `{"raw":"null"}`}, // the emulator sends null for no payload
		{"echo", `{"still":"alive"}`, 200, `{"still":"alive"}`},
	}
	for _, tt := range tests {
		status, resp := call(t, ctx, e, tt.method, tt.payload)
		if status != tt.status || resp != tt.resp {
			t.Errorf("%s(%s) = %d %s, want %d %s", tt.method, tt.payload, status, resp, tt.status, tt.resp)
		}
	}
	if n := testutil.Logged(c.log, "method handler panicked"); n != 1 {
		t.Errorf("panic logged %d times", n)
	}
}

// TestWrongCA is trap 4: a gateway certificate that does not chain to the
// identity's CA fails loudly and is never accepted.
func TestWrongCA(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 30*time.Second)
	e := startEmulator(t, emulator.Options{})
	other := startEmulator(t, emulator.Options{})
	for _, mode := range []identityMode{modeHubDev, modeDeviceString} {
		t.Run(string(mode), func(t *testing.T) {
			var getenv func(string) string
			if mode == modeHubDev {
				getenv = envMap(t)(e.HubDevEnv(testDevice, testModule))
			} else {
				getenv = envMap(t)(e.DeviceEnv(testDevice, ""))
			}
			id, err := identity.Load(ctx, func(k string) string {
				if (k == identity.EnvEdgeModuleCAFile || k == identity.EnvHubCAFile) && getenv(k) != "" {
					return other.CAFile()
				}
				return getenv(k)
			})
			if err != nil {
				t.Fatal(err)
			}
			c := newTestClient(t, e, id, nil)
			err = c.Run(ctx)
			// crypto/tls wraps every failed verification of the server's
			// certificate (unknown authority, wrong name, expiry) in this.
			var verr *tls.CertificateVerificationError
			if !errors.As(err, &verr) {
				t.Fatalf("Run = %v, want a certificate verification error", err)
			}
			if c.Connected() || e.Connects(testDevice, id.ModuleID) != 0 {
				t.Fatalf("connected with an untrusted certificate")
			}
			if testutil.Logged(c.log, "TLS verification of the hub's certificate failed; check the trust bundle or CA file") != 1 {
				t.Errorf("the failure was not logged as an error")
			}
		})
	}
}

// TestTokenRenewal is trap 5 against an emulator that behaves as edgeHub
// does at a takeover (tools/edgeemu README, "Token renewal against edgeHub"):
// the old connection closes right after the new CONNACK, the calls still
// waiting on it fail with 504, answers published elsewhere are dropped, a
// call finding no method subscription is answered 404 at once, and the token
// is enforced. With 6 s tokens, across 8 renewals, tunnelOpen-like calls come
// from four viewers (fast calls, 15 to 55 ms apart) and a slow camera (calls
// that take 1 to 2 s, 0.3 to 1 s apart); some calls patch the twin from their
// handler. The callers retry a 404 from the hub (not from the module) as the
// relay does (invokeRetrying): the client unsubscribes the old connection from
// methods before the switch and answers what it was given there, so no call
// may fail. No renewal is seen by the application as a disconnect.
func TestTokenRenewal(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 3*time.Minute)
	// The emulator looks for expired tokens every 5 minutes, as edgeHub
	// does, not every 250 ms: with 6 s tokens a renewal has 0.6 s between
	// its 90 % deadline and the expiry, and on a loaded machine it once
	// finished after it (a call on the old connection then failed 504 when
	// the emulator dropped it). Production tokens leave minutes. That the
	// renewal starts within 50-90 % is TestRenewalTime's; that each new
	// connection carries a new token is checked below, by its expiry.
	e := startEmulator(t, emulator.Options{Logger: slog.New(slog.DiscardHandler)})
	ev := newEvents()
	log := testutil.TLoggerAt(t, "hub", slog.LevelInfo) // not a line per call
	c := newTestClient(t, e, loadIdentity(t, ctx, e, modeEdge), func(o *Options) {
		o.TokenLifetime = 6 * time.Second
		o.Logger = log
		ev.hook(o)
	})
	c.Handle("tunnelOpen", func(ctx context.Context, p []byte) (int, []byte) {
		var req struct {
			DelayMS int  `json:"delayMs"`
			Patch   bool `json:"patch"`
		}
		if err := json.Unmarshal(p, &req); err != nil {
			return 400, errorJSON(err)
		}
		select {
		case <-time.After(time.Duration(req.DelayMS) * time.Millisecond): // a camera slow to accept
		case <-ctx.Done():
			return 503, nil
		}
		if req.Patch {
			if _, err := c.UpdateReported(ctx, json.RawMessage(`{"lastCall":`+string(p)+`}`)); err != nil {
				return 500, errorJSON(err)
			}
		}
		return 200, p
	})
	started := time.Now() // before the first token is minted
	runSubscribed(t, ctx, e, c)
	const renewals = 8
	var (
		wg         sync.WaitGroup
		failures   = make(chan string, 100)
		stop       = make(chan struct{})
		ok, slow   atomic.Int64
		retried    atomic.Int64
		fastFailed atomic.Int64
		slowFailed atomic.Int64
	)
	caller := func(w int, delay func(i int) (call, pause time.Duration)) {
		defer wg.Done()
		for i := 0; ; i++ {
			d, pause := delay(i)
			p := fmt.Sprintf(`{"caller":%d,"n":%d,"delayMs":%d,"patch":%t}`, w, i, d.Milliseconds(), i%10 == 0)
			status, resp, n, err := invokeRetrying(ctx, e, "tunnelOpen", json.RawMessage(p), 20*time.Second)
			retried.Add(int64(n))
			if err != nil || status != 200 || string(resp) != p {
				if d > 0 {
					slowFailed.Add(1)
				} else {
					fastFailed.Add(1)
				}
				select {
				case failures <- fmt.Sprintf("%s: %s: %d %s %v", time.Now().Format("15:04:05.000"), p, status, resp, err):
				default:
				}
			} else {
				ok.Add(1)
				if d > 0 {
					slow.Add(1)
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(pause):
			}
		}
	}
	for w := range 4 { // viewers: fast calls, 15 to 55 ms apart
		wg.Add(1)
		go caller(w, func(i int) (time.Duration, time.Duration) {
			return 0, time.Duration(15+(i*7+w*13)%41) * time.Millisecond
		})
	}
	wg.Add(1) // a slow camera: calls of 1 to 2 s, 0.3 to 1 s apart
	go caller(4, func(i int) (time.Duration, time.Duration) {
		return time.Duration(1000+(i*373)%1000) * time.Millisecond, time.Duration(300+(i*211)%700) * time.Millisecond
	})
	if err := e.WaitConnects(ctx, testDevice, testModule, renewals+1); err != nil {
		t.Fatal(err)
	}
	// The first token expires over 5 s after started (6 s, cut to whole
	// seconds), and each renewal starts at 50 % of the lifetime at the
	// earliest, so each new token expires at least 3 s after the one it
	// replaces: a client that connected again with an old token falls
	// short. Only lower bounds: a slow machine only adds to them (reading
	// the first connection's expiry after the subscription would miss a
	// renewal that came first).
	want := 5*time.Second + renewals*3*time.Second
	if last, _ := e.ConnInfo(testDevice, testModule); last.TokenExpiry.Sub(started) < want {
		t.Errorf("after %d renewals the token expires at %v, want at least %v after the start (%v)",
			renewals, last.TokenExpiry.Format(time.StampMilli), want, started.Format(time.StampMilli))
	}
	close(stop)
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Log("failed: " + f)
	}
	late := testutil.Logged(log, "method call arrived on a connection being replaced")
	if f, s := fastFailed.Load(), slowFailed.Load(); f+s > 0 {
		t.Errorf("%d fast and %d slow calls failed across %d renewals (%d arrived on a connection being replaced)", f, s, renewals, late)
	}
	ev.wait(t, ctx, "OnTwin and OnConnected after each renewal", func(ev *events) bool {
		return ev.connected >= renewals+1 && len(ev.twins) >= renewals+1
	})
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.changes) != 1 || !ev.changes[0] {
		t.Errorf("OnConnectionChange calls %v, want [true] (renewals are not disconnects)", ev.changes)
	}
	waited := testutil.Logged(log, "token renewal waits for the method calls in flight")
	t.Logf("%d calls succeeded (%d slow), %d fast and %d slow failed, %d retries after a 404 from the hub, across %d connections; %d renewals waited for calls in flight; %d calls arrived on a connection being replaced",
		ok.Load(), slow.Load(), fastFailed.Load(), slowFailed.Load(), retried.Load(), e.Connects(testDevice, testModule), waited, late)
	if ok.Load() < 1000 {
		t.Errorf("only %d calls succeeded", ok.Load())
	}
	if waited == 0 {
		t.Error("no renewal found a call in flight: the test did not exercise the wait")
	}
}

// TestRenewalServesCallInFlight: a call that is still running when the
// renewal can wait no longer (90% of the token's lifetime) is not lost. The
// client unsubscribes the old connection from methods (new calls get 404103
// at once), answers the running call there, and only then connects again;
// the running call succeeds and new calls reach the new connection.
func TestRenewalServesCallInFlight(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 2*time.Minute)
	// The token is not enforced (edgeHub checks every 5 minutes); the drain
	// is bounded by 95% of it, 1.5 s after the renewal's 90%.
	e := startEmulator(t, emulator.Options{Logger: slog.New(slog.DiscardHandler)})
	log := testutil.TLoggerAt(t, "hub", slog.LevelInfo)
	c := newTestClient(t, e, loadIdentity(t, ctx, e, modeEdge), func(o *Options) {
		o.TokenLifetime = 30 * time.Second
		o.Logger = log
	})
	release := make(chan struct{})
	c.Handle("slow", func(ctx context.Context, p []byte) (int, []byte) {
		return hold(ctx, release, p)
	})
	c.Handle("echo", echo)
	runSubscribed(t, ctx, e, c)
	slow := make(chan error, 1)
	go func() {
		status, resp, err := e.InvokeMethod(ctx, testDevice, testModule, "slow", json.RawMessage(`"slow"`), time.Minute)
		if err == nil && (status != 200 || string(resp) != `"slow"`) {
			err = fmt.Errorf("answered %d %s", status, resp)
		}
		slow <- err
	}()
	// New calls are served until the renewal begins (at 90% of the token's
	// lifetime, the slow call being in flight): then they are answered
	// 404103, or, without the unsubscription, the client connects again.
	for e.Connects(testDevice, testModule) == 1 {
		status, _, err := e.InvokeMethod(ctx, testDevice, testModule, "echo", json.RawMessage(`1`), 10*time.Second)
		var he *emulator.HubError
		if errors.As(err, &he) && he.Code == emulator.CodeDeviceNotOnline {
			break
		}
		if err != nil || status != 200 {
			t.Fatalf("call before the renewal: %d %v", status, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("the call in flight at the renewal: %v, want its answer", err)
	}
	if status, resp, _, err := invokeRetrying(ctx, e, "echo", json.RawMessage(`2`), 20*time.Second); err != nil || status != 200 || string(resp) != "2" {
		t.Errorf("call after the renewal: %d %s %v", status, resp, err)
	}
	if err := e.WaitConnects(ctx, testDevice, testModule, 2); err != nil {
		t.Fatal(err)
	}
	if n := testutil.Logged(log, "renewing the token with method calls in flight: the hub will answer them 504"); n != 0 {
		t.Errorf("the renewal switched with the call in flight")
	}
}

// TestReconnect is trap 5 (second half) and the re-publish hook: after the
// hub drops the connection or restarts, the client reconnects, calls
// OnConnectionChange, re-reads the twin (desired changes made while it was
// away are delivered through OnTwin) and calls OnConnected, from which the
// application re-publishes its reported state.
func TestReconnect(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 60*time.Second)
	dir := shortDir(t)
	e := startEmulator(t, emulator.Options{Dir: dir})
	mqttPort, httpsPort := e.MQTTPort(), e.HTTPSPort()
	ev := newEvents()
	var c *testClient
	var republished atomic.Int32
	ev.onConnected = func() {
		if _, err := c.UpdateReported(ctx, json.RawMessage(`{"state":"full"}`)); err != nil {
			t.Errorf("re-publish from OnConnected: %v", err)
			return
		}
		republished.Add(1)
	}
	c = newTestClient(t, e, loadIdentity(t, ctx, e, modeModuleString), ev.hook)
	c.Handle("echo", echo)
	startRun(t, ctx, c)
	ev.wait(t, ctx, "first OnConnected", func(ev *events) bool { return ev.connected == 1 })
	if _, err := e.PatchDesired(testDevice, testModule, json.RawMessage(`{"pushed":1}`)); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, ctx, "a pushed patch", func(ev *events) bool {
		return len(ev.patches) == 1 && strings.Contains(string(ev.patches[0]), `"pushed":1`)
	})

	// 1. The hub drops the connection.
	e.Disconnect(testDevice, testModule)
	ev.wait(t, ctx, "reconnect after Disconnect", func(ev *events) bool {
		return ev.connected == 2 && len(ev.changes) == 3 && !ev.changes[1] && ev.changes[2]
	})

	// 2. The hub restarts, and the desired properties change while the
	// client cannot reach it: they are patched on a second emulator over
	// the same state folder on other ports.
	e.Close()
	ev.wait(t, ctx, "disconnect", func(ev *events) bool { return len(ev.changes) == 4 })
	if c.Connected() {
		t.Error("Connected() after the hub closed")
	}
	if _, err := c.UpdateReported(ctx, json.RawMessage(`{"x":1}`)); !errors.Is(err, ErrNotConnected) {
		t.Errorf("UpdateReported while disconnected = %v, want ErrNotConnected", err)
	}
	aside, err := emulator.New(emulator.Options{Dir: dir, WorkloadSocket: dir + "/aside.sock", Logger: testutil.TLogger(t, "aside")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aside.PatchDesired(testDevice, testModule, json.RawMessage(`{"offline":"changed"}`)); err != nil {
		t.Fatal(err)
	}
	aside.Close()
	e2 := startEmulator(t, emulator.Options{Dir: dir, MQTTPort: mqttPort, HTTPSPort: httpsPort})
	ev.wait(t, ctx, "reconnect after restart with the offline change in OnTwin", func(ev *events) bool {
		return ev.connected == 3 && len(ev.twins) == 3 && strings.Contains(string(ev.twins[2]), `"offline":"changed"`)
	})
	if err := e2.WaitSubscribed(ctx, testDevice, testModule, filterMethods); err != nil {
		t.Fatal(err)
	}
	if status, resp := call(t, ctx, e2, "echo", `{"after":"restart"}`); status != 200 || resp != `{"after":"restart"}` {
		t.Errorf("echo after restart: %d %s", status, resp)
	}
	if republished.Load() != 3 {
		t.Errorf("re-published %d times, want 3", republished.Load())
	}
	_, reported, _ := e2.Twin(testDevice, testModule)
	if !strings.Contains(string(reported), `"state":"full"`) {
		t.Errorf("reported after restart: %s", reported)
	}
}

// TestFirstConnectRetried is trap 8: the hub is not up when Run starts.
func TestFirstConnectRetried(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 30*time.Second)
	dir := shortDir(t)
	e := startEmulator(t, emulator.Options{Dir: dir})
	id := loadIdentity(t, ctx, e, modeDeviceString)
	mqttPort, httpsPort := e.MQTTPort(), e.HTTPSPort()
	e.Close()

	c := newTestClient(t, e, id, nil)
	c.Handle("echo", echo)
	startRun(t, ctx, c)
	// Bounded by the test's context, not a shorter wall-clock deadline:
	// three attempts 50-500 ms apart, however slow the machine.
	waitLogged(t, ctx, c.log, "failed to connect", 3)
	e2 := startEmulator(t, emulator.Options{Dir: dir, MQTTPort: mqttPort, HTTPSPort: httpsPort})
	if err := e2.WaitSubscribed(ctx, testDevice, "", filterMethods); err != nil {
		t.Fatal(err)
	}
	if status, _, err := e2.InvokeMethod(ctx, testDevice, "", "echo", json.RawMessage(`1`), 5*time.Second); status != 200 || err != nil {
		t.Errorf("echo: %d %v", status, err)
	}
}

// TestWebSocket connects over MQTT over WebSockets, directly and through an
// HTTP CONNECT proxy.
func TestWebSocket(t *testing.T) {
	t.Parallel()
	for _, viaProxy := range []bool{false, true} {
		t.Run(fmt.Sprintf("proxy=%v", viaProxy), func(t *testing.T) {
			t.Parallel()
			ctx := testutil.Context(t, 30*time.Second)
			e := startEmulator(t, emulator.Options{})
			var proxied atomic.Int32
			c := newTestClient(t, e, loadIdentity(t, ctx, e, modeEdge), func(o *Options) {
				o.Transport = TransportMQTTWS
				o.Port = e.HTTPSPort()
				if viaProxy {
					p := connectProxy(t, &proxied)
					o.Proxy = func(*http.Request) (*url.URL, error) { return p, nil }
				}
			})
			c.Handle("echo", echo)
			runSubscribed(t, ctx, e, c)
			if info, _ := e.ConnInfo(testDevice, testModule); info.Transport != "wss" || info.ModelID != DefaultModelID {
				t.Errorf("transport %q, model id %q", info.Transport, info.ModelID)
			}
			if status, resp := call(t, ctx, e, "echo", `{"ws":true}`); status != 200 || resp != `{"ws":true}` {
				t.Errorf("echo: %d %s", status, resp)
			}
			if viaProxy && proxied.Load() != 1 {
				t.Errorf("proxy saw %d CONNECTs, want 1", proxied.Load())
			}
		})
	}
}

// connectProxy starts an HTTP CONNECT proxy and returns its URL.
func connectProxy(t *testing.T, count *atomic.Int32) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		count.Add(1)
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			up.Close()
			return
		}
		w.WriteHeader(http.StatusOK)
		down, rw, err := hj.Hijack()
		if err != nil {
			up.Close()
			return
		}
		go func() {
			defer up.Close()
			defer down.Close()
			go func() { _, _ = io.Copy(up, rw.Reader); _ = up.(*net.TCPConn).CloseWrite() }()
			_, _ = io.Copy(down, up)
		}()
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

// TestDesiredPatches checks that pushed patches reach OnDesiredPatch in
// version order and that the last state is always delivered.
func TestDesiredPatches(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 30*time.Second)
	e := startEmulator(t, emulator.Options{})
	ev := newEvents()
	c := newTestClient(t, e, loadIdentity(t, ctx, e, modeEdge), ev.hook)
	startRun(t, ctx, c)
	ev.wait(t, ctx, "OnConnected", func(ev *events) bool { return ev.connected == 1 })
	var last int
	for i := range 30 {
		v, err := e.PatchDesired(testDevice, testModule, json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		last = v
	}
	ev.wait(t, ctx, "the last version", func(ev *events) bool {
		var docs []json.RawMessage
		docs = append(docs, ev.twins...)
		docs = append(docs, ev.patches...)
		for _, d := range docs {
			if version(d) == last {
				return true
			}
		}
		return false
	})
	ev.mu.Lock()
	defer ev.mu.Unlock()
	prev := 0
	for _, p := range ev.patches {
		v := version(p)
		if v <= prev {
			t.Errorf("patch versions out of order: %d after %d", v, prev)
		}
		prev = v
	}
}
