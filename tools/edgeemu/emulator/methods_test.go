package emulator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/testutil"
)

// echo answers every method with the status named in its payload ({"status":n}) and the
// payload itself.
func echo(name string, payload []byte) (int, []byte) {
	var p struct{ Status int }
	_ = json.Unmarshal(payload, &p)
	if p.Status == 0 {
		p.Status = 200
	}
	return p.Status, payload
}

func TestMethodRoundTrip(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{})
	ctx := testutil.Context(t)
	d := connect(t, e, testDevice, testModule)
	var mu sync.Mutex
	var seen []string
	d.serveMethods(func(name string, payload []byte) (int, []byte) {
		mu.Lock()
		seen = append(seen, name+" "+string(payload))
		mu.Unlock()
		switch name {
		case "empty":
			return 200, nil
		case "text":
			return 200, []byte("not json")
		}
		return echo(name, payload)
	})
	tests := []struct {
		name, method, payload string
		wantStatus            int
		wantBody              string
		wantSeen              string
	}{
		{name: "200", method: "tunnelOpen", payload: `{"localPort":554}`, wantStatus: 200, wantBody: `{"localPort":554}`},
		{name: "400 passthrough", method: "tunnelOpen", payload: `{"status":400,"code":"400"}`, wantStatus: 400, wantBody: `{"status":400,"code":"400"}`},
		{name: "500 passthrough", method: "x", payload: `{"status":500}`, wantStatus: 500, wantBody: `{"status":500}`},
		{name: "custom status", method: "x", payload: `{"status":299}`, wantStatus: 299, wantBody: `{"status":299}`},
		{name: "nil payload sends null", method: "x", wantStatus: 200, wantBody: `null`, wantSeen: "x null"},
		{name: "payload compacted", method: "y", payload: "{ \"a\" : 1 }", wantStatus: 200, wantBody: `{"a":1}`, wantSeen: `y {"a":1}`},
		{name: "empty answer is null", method: "empty", payload: `{}`, wantStatus: 200, wantBody: `null`},
		{name: "non-JSON answer becomes a string", method: "text", payload: `{}`, wantStatus: 200, wantBody: `"not json"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var payload json.RawMessage
			if tt.payload != "" {
				payload = json.RawMessage(tt.payload)
			}
			status, body, err := e.InvokeMethod(ctx, testDevice, testModule, tt.method, payload, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if status != tt.wantStatus || string(body) != tt.wantBody {
				t.Errorf("got %d %s, want %d %s", status, body, tt.wantStatus, tt.wantBody)
			}
			if tt.wantSeen != "" {
				mu.Lock()
				last := seen[len(seen)-1]
				mu.Unlock()
				if last != tt.wantSeen {
					t.Errorf("device saw %q, want %q", last, tt.wantSeen)
				}
			}
		})
	}
}

func hubErrCode(err error) int {
	var he *emulator.HubError
	if errors.As(err, &he) {
		return he.Code
	}
	return 0
}

func TestMethodErrors(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{Identities: []emulator.Identity{
		{DeviceID: testDevice, ModuleID: testModule},
		{DeviceID: "unsubscribed"},
		{DeviceID: "silent"},
		{DeviceID: "offline"},
	}})
	ctx := testutil.Context(t)
	connect(t, e, "unsubscribed", "").serveTwin()
	silent := connect(t, e, "silent", "")
	silent.serveMethods(func(string, []byte) (int, []byte) { select {} })
	big := connect(t, e, testDevice, testModule)
	big.serveMethods(func(string, []byte) (int, []byte) {
		return 200, []byte(`"` + strings.Repeat("x", 128*1024) + `"`)
	})

	tests := []struct {
		name           string
		device, module string
		payload        string
		timeout        time.Duration
		wantCode       int
		wantStatus     int
	}{
		{name: "not connected", device: "offline", wantCode: emulator.CodeDeviceNotOnline, wantStatus: 404},
		{name: "not subscribed to methods", device: "unsubscribed", wantCode: emulator.CodeDeviceNotOnline, wantStatus: 404},
		{name: "no answer", device: "silent", timeout: 300 * time.Millisecond, wantCode: emulator.CodeGatewayTimeout, wantStatus: 504},
		{name: "unknown device", device: "ghost", wantCode: emulator.CodeDeviceNotFound, wantStatus: 404},
		{name: "unknown module", device: testDevice, module: "ghost", wantCode: emulator.CodeModuleNotFound, wantStatus: 404},
		{name: "request over 128 KB", device: testDevice, module: testModule, payload: `"` + strings.Repeat("x", 128*1024) + `"`, wantCode: emulator.CodeArgumentInvalid, wantStatus: 400},
		{name: "request not JSON", device: testDevice, module: testModule, payload: `{`, wantCode: emulator.CodeArgumentInvalid, wantStatus: 400},
		{name: "answer over 128 KB", device: testDevice, module: testModule, wantCode: emulator.CodeMessageTooLarge, wantStatus: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			var payload json.RawMessage
			if tt.payload != "" {
				payload = json.RawMessage(tt.payload)
			}
			_, _, err := e.InvokeMethod(ctx, tt.device, tt.module, "tunnelOpen", payload, timeout)
			var he *emulator.HubError
			if !errors.As(err, &he) || he.Code != tt.wantCode || he.Status != tt.wantStatus {
				t.Fatalf("err = %v, want code %d status %d", err, tt.wantCode, tt.wantStatus)
			}
		})
	}

	t.Run("exactly 128 KB request is accepted", func(t *testing.T) {
		payload := `"` + strings.Repeat("x", 128*1024-2) + `"`
		e2 := start(t, emulator.Options{})
		connect(t, e2, testDevice, testModule).serveMethods(func(string, []byte) (int, []byte) { return 200, nil })
		if _, _, err := e2.InvokeMethod(ctx, testDevice, testModule, "m", json.RawMessage(payload), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

func TestMethodConnectTimeout(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{})
	ctx := testutil.Context(t)
	res := make(chan error, 1)
	go func() {
		r, err := e.Invoke(ctx, emulator.MethodRequest{DeviceID: testDevice, ModuleID: testModule, Method: "m",
			// Both far beyond what a loaded machine adds to a connect and
			// an answer: the test decides by the 201, not by the clock.
			ResponseTimeout: 30 * time.Second, ConnectTimeout: 30 * time.Second})
		if err == nil && r.Status != 201 {
			err = fmt.Errorf("status %d", r.Status)
		}
		res <- err
	}()
	time.Sleep(100 * time.Millisecond) // the call is waiting for the device to come online
	connect(t, e, testDevice, testModule).serveMethods(func(string, []byte) (int, []byte) { return 201, nil })
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentMethods answers many overlapping calls out of order and checks each caller gets
// its own answer.
func TestConcurrentMethods(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{})
	ctx := testutil.Context(t)
	d := connect(t, e, testDevice, testModule)
	const n = 64
	var arrived sync.WaitGroup
	arrived.Add(n)
	release := make(chan struct{})
	d.serveMethods(func(name string, payload []byte) (int, []byte) {
		arrived.Done()
		<-release // hold every answer until all calls are in flight
		var p struct{ I int }
		_ = json.Unmarshal(payload, &p)
		return 200 + p.I, payload
	})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, body, err := e.InvokeMethod(ctx, testDevice, testModule, "m", json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), 20*time.Second)
			if err != nil {
				errs <- err
				return
			}
			if want := fmt.Sprintf(`{"i":%d}`, i); status != 200+i || string(body) != want {
				errs <- fmt.Errorf("call %d got %d %s", i, status, body)
			}
		}()
	}
	waitGroup(ctx, t, &arrived)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func waitGroup(ctx context.Context, t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("timed out waiting for all calls to reach the device")
	}
}

func TestDisconnectFaultInjection(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{})
	ctx := testutil.Context(t)
	d := connect(t, e, testDevice, testModule)
	e.Disconnect(testDevice, testModule)
	if err := d.waitLost(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitConnectedState(ctx, testDevice, testModule, false); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.InvokeMethod(ctx, testDevice, testModule, "m", nil, time.Second)
	if hubErrCode(err) != emulator.CodeDeviceNotOnline {
		t.Fatalf("err = %v, want 404103", err)
	}
}
