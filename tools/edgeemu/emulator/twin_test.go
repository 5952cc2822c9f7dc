package emulator_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/testutil"
)

func TestTwinReported(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{})
	ctx := testutil.Context(t)
	d := connect(t, e, testDevice, testModule)
	d.serveTwin()

	r, err := d.getTwin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 || string(r.body) != `{"desired":{"$version":1},"reported":{"$version":1}}` {
		t.Fatalf("initial GET = %d %s", r.status, r.body)
	}

	big := strings.Repeat("x", 4000)
	steps := []struct {
		name         string
		patch        string
		wantStatus   int
		wantVersion  int
		wantReported string
	}{
		{name: "add", patch: `{"a":1,"s":{"x":1,"y":2}}`, wantStatus: 204, wantVersion: 2, wantReported: `{"$version":2,"a":1,"s":{"x":1,"y":2}}`},
		{name: "nested merge", patch: `{"s":{"y":3,"z":4}}`, wantStatus: 204, wantVersion: 3, wantReported: `{"$version":3,"a":1,"s":{"x":1,"y":3,"z":4}}`},
		{name: "null deletes", patch: `{"a":null,"s":{"x":null}}`, wantStatus: 204, wantVersion: 4, wantReported: `{"$version":4,"s":{"y":3,"z":4}}`},
		{name: "bad JSON", patch: `{"a":`, wantStatus: 400, wantReported: `{"$version":4,"s":{"y":3,"z":4}}`},
		{name: "not an object", patch: `[1,2]`, wantStatus: 400, wantReported: `{"$version":4,"s":{"y":3,"z":4}}`},
		{name: "bad key", patch: `{"a.b":1}`, wantStatus: 400, wantReported: `{"$version":4,"s":{"y":3,"z":4}}`},
		{name: "dollar key", patch: `{"$x":1}`, wantStatus: 400, wantReported: `{"$version":4,"s":{"y":3,"z":4}}`},
		{name: "too deep", patch: `{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"j":{"k":1}}}}}}}}}}}`, wantStatus: 400, wantReported: `{"$version":4,"s":{"y":3,"z":4}}`},
		{name: "up to 32 KB", patch: fmt.Sprintf(`{"b1":%q,"b2":%q,"b3":%q,"b4":%q,"b5":%q,"b6":%q,"b7":%q}`, big, big, big, big, big, big, big), wantStatus: 204, wantVersion: 5},
		{name: "over 32 KB", patch: fmt.Sprintf(`{"b8":%q,"b9":%q}`, big, big), wantStatus: 413},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r, err := d.patchReported(ctx, s.patch)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != s.wantStatus || r.version != s.wantVersion {
				t.Fatalf("PATCH = %d version %d (%s), want %d version %d", r.status, r.version, r.body, s.wantStatus, s.wantVersion)
			}
			if s.wantStatus >= 400 {
				var body struct{ ErrorCode int }
				if err := json.Unmarshal(r.body, &body); err != nil || body.ErrorCode/1000 != s.wantStatus {
					t.Errorf("error body %s", r.body)
				}
			}
			if s.wantReported == "" {
				return
			}
			_, reported, err := e.Twin(testDevice, testModule)
			if err != nil {
				t.Fatal(err)
			}
			if string(reported) != s.wantReported {
				t.Errorf("reported = %s, want %s", reported, s.wantReported)
			}
			g, err := d.getTwin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := `{"desired":{"$version":1},"reported":` + s.wantReported + `}`; string(g.body) != want {
				t.Errorf("GET = %s, want %s", g.body, want)
			}
		})
	}
	if _, reported, _ := e.Twin(testDevice, testModule); !strings.Contains(string(reported), `"$version":5`) {
		t.Errorf("a refused patch changed the twin: %.80s", reported)
	}
}

func TestTwinNeedsResponseSubscription(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{})
	ctx := testutil.Context(t)
	d := connect(t, e, testDevice, testModule)
	// No $iothub/twin/res/# subscription: the patch is applied but no answer comes back.
	d.c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=1", 1, false, `{"a":1}`).Wait()
	if err := e.WaitTwin(ctx, testDevice, testModule, func(_, r json.RawMessage) bool {
		return strings.Contains(string(r), `"a":1`)
	}); err != nil {
		t.Fatal(err)
	}
}

func TestDesiredPush(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{Identities: []emulator.Identity{
		{DeviceID: testDevice, ModuleID: testModule},
		{DeviceID: "nosub"},
	}})
	ctx := testutil.Context(t)

	// Changed while disconnected: stored, not replayed later.
	if v, err := e.PatchDesired(testDevice, testModule, json.RawMessage(`{"early":true}`)); err != nil || v != 2 {
		t.Fatalf("PatchDesired = %d, %v", v, err)
	}
	d := connect(t, e, testDevice, testModule)
	d.serveTwin()
	nosub := connect(t, e, "nosub", "")
	nosubGot := make(chan []byte, 1)
	nosub.subscribe("$iothub/twin/res/#", func(_ paho.Client, m paho.Message) { nosubGot <- m.Payload() })

	patches := []struct {
		patch, wantPush, wantDesired string
	}{
		{`{"targets":{"554":"cam1:554"}}`, `{"$version":3,"targets":{"554":"cam1:554"}}`, `{"$version":3,"early":true,"targets":{"554":"cam1:554"}}`},
		{`{"targets":{"5541":"cam2:554"}}`, `{"$version":4,"targets":{"5541":"cam2:554"}}`, `{"$version":4,"early":true,"targets":{"554":"cam1:554","5541":"cam2:554"}}`},
		{`{"early":null}`, `{"$version":5,"early":null}`, `{"$version":5,"targets":{"554":"cam1:554","5541":"cam2:554"}}`},
	}
	for _, p := range patches {
		if _, err := e.PatchDesired(testDevice, testModule, json.RawMessage(p.patch)); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-d.desired:
			if string(got) != p.wantPush {
				t.Errorf("pushed %s, want %s", got, p.wantPush)
			}
		case <-ctx.Done():
			t.Fatal("no desired push")
		}
		if desired, _, _ := e.Twin(testDevice, testModule); string(desired) != p.wantDesired {
			t.Errorf("desired = %s, want %s", desired, p.wantDesired)
		}
	}
	if _, err := e.PatchDesired("nosub", "", json.RawMessage(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{"a.b":1}`, `[1]`, `nope`} {
		var he *emulator.HubError
		if _, err := e.PatchDesired(testDevice, testModule, json.RawMessage(bad)); !errors.As(err, &he) || he.Status != 400 {
			t.Errorf("PatchDesired(%s) err = %v, want 400", bad, err)
		}
	}
	select {
	case b := <-nosubGot:
		t.Errorf("a client not subscribed to desired updates got %s", b)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestTopicAuthorization(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{Identities: []emulator.Identity{
		{DeviceID: testDevice, ModuleID: testModule},
		{DeviceID: "other", ModuleID: "m"},
		{DeviceID: "plain"},
	}})
	ctx := testutil.Context(t)

	t.Run("subscribe", func(t *testing.T) {
		d := connect(t, e, testDevice, testModule)
		plain := connect(t, e, "plain", "")
		tests := []struct {
			d      *device
			filter string
			ok     bool
		}{
			{d, "$iothub/methods/POST/#", true},
			{d, "$iothub/twin/res/#", true},
			{d, "$iothub/twin/PATCH/properties/desired/#", true},
			{d, "devices/edge-device/modules/rtsptunnel/inputs/#", true},
			{d, "devices/edge-device/modules/rtsptunnel/messages/devicebound/#", true},
			{plain, "devices/plain/messages/devicebound/#", true},
			{d, "devices/other/modules/m/inputs/#", false},
			{d, "devices/edge-device/messages/devicebound/#", false},
			{plain, "devices/other/messages/devicebound/#", false},
			{d, "#", false},
			{d, "$iothub/#", false},
			{d, "$SYS/#", false},
			{d, "$iothub/methods/res/#", false},
		}
		for _, tt := range tests {
			code := tt.d.subscribe(tt.filter, func(paho.Client, paho.Message) {})
			if granted := code < 0x80; granted != tt.ok {
				t.Errorf("subscribe %q: SUBACK %#x, want granted=%v", tt.filter, code, tt.ok)
			}
		}
		if !d.c.IsConnectionOpen() {
			t.Error("a refused subscription closed the connection")
		}
	})

	t.Run("publish", func(t *testing.T) {
		tests := []struct {
			topic string
			qos   byte
			ok    bool
		}{
			{"devices/edge-device/modules/rtsptunnel/messages/events/", 1, true},
			{"devices/edge-device/modules/rtsptunnel/messages/events/a=b", 0, true},
			{"$iothub/methods/res/200/?$rid=99", 1, true},
			{"$iothub/twin/GET/?$rid=1", 0, true},
			{"devices/other/modules/m/messages/events/", 1, false},
			{"devices/edge-device/messages/events/", 0, false},
			{"$iothub/twin/PATCH/properties/desired/?$rid=1", 1, false},
			{"$iothub/methods/POST/x/?$rid=1", 0, false},
			{"anything", 0, false},
			{"devices/edge-device/modules/rtsptunnel/messages/events/qos2", 2, false},
		}
		for _, tt := range tests {
			t.Run(tt.topic, func(t *testing.T) {
				d := connect(t, e, testDevice, testModule)
				d.c.Publish(tt.topic, tt.qos, false, "{}").WaitTimeout(2 * time.Second)
				if tt.ok {
					// A round trip proves the connection survived the publish.
					d.serveTwin()
					if _, err := d.getTwin(ctx); err != nil {
						t.Fatalf("connection broken after an allowed publish: %v", err)
					}
					return
				}
				if err := d.waitLost(testutil.Context(t)); err != nil {
					t.Fatalf("forbidden publish did not close the connection: %v", err)
				}
			})
		}
	})
}

func TestWebSocket(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{})
	ctx := testutil.Context(t)
	d, err := dial(t, e, "wss://"+e.HTTPSAddr()+"/$iothub/websocket", newCreds(t, e, testDevice, testModule))
	if err != nil {
		t.Fatal(err)
	}
	d.serveMethods(echo)
	d.serveTwin()
	if info, _ := e.ConnInfo(testDevice, testModule); info.Transport != "wss" || info.ModelID != testModel {
		t.Errorf("ConnInfo = %+v", info)
	}
	status, body, err := e.InvokeMethod(ctx, testDevice, testModule, "m", json.RawMessage(`{"status":202}`), 5*time.Second)
	if err != nil || status != 202 || string(body) != `{"status":202}` {
		t.Fatalf("InvokeMethod = %d %s %v", status, body, err)
	}
	if r, err := d.patchReported(ctx, `{"ws":true}`); err != nil || r.status != 204 {
		t.Fatalf("patch = %+v %v", r, err)
	}
}
