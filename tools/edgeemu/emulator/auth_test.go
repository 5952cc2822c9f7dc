package emulator_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/sas"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/testutil"
)

func TestConnectAuth(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{Identities: []emulator.Identity{
		{DeviceID: testDevice, ModuleID: testModule},
		{DeviceID: "plain"},
	}})
	hub := e.HubHostName()
	modKey := keyOf(t, e, testDevice, testModule)
	devKey := keyOf(t, e, "plain", "")
	modRes := sas.Resource(hub, testDevice, testModule)
	hour := time.Now().Add(time.Hour)

	tests := []struct {
		name        string
		mod         func(*creds)
		device      string // default testDevice/testModule
		wantRefused bool
		wantModel   string
		nonstandard bool
	}{
		{name: "module ok", wantModel: testModel},
		{name: "device ok", device: "plain", wantModel: testModel},
		{name: "no model id", mod: func(c *creds) { c.username = hub + "/" + testDevice + "/" + testModule + "/?api-version=2021-04-12" }},
		{name: "unencoded model id (Node SDK)", mod: func(c *creds) {
			c.username = hub + "/" + testDevice + "/" + testModule + "/?api-version=2021-04-12&model-id=" + testModel + "&DeviceClientType=x"
		}, wantModel: testModel},
		{name: "legacy username without ?", device: "plain", mod: func(c *creds) {
			c.username = hub + "/plain/api-version=2020-09-30&model-id=dtmi%3Ax%3By%3B1"
		}, wantModel: "dtmi:x;y;1", nonstandard: true},
		{name: "hub name case-insensitive", mod: func(c *creds) { c.username = strings.ToUpper(c.username[:len(hub)]) + c.username[len(hub):] }, wantModel: testModel},
		{name: "wrong key", mod: func(c *creds) { c.password = sas.New([]byte("wrong"), modRes, "", hour) }, wantRefused: true},
		{name: "device key for module", mod: func(c *creds) { c.password = sas.New(devKey, modRes, "", hour) }, wantRefused: true},
		{name: "wrong resource", mod: func(c *creds) {
			c.password = sas.New(modKey, sas.Resource(hub, testDevice, ""), "", hour)
		}, wantRefused: true},
		{name: "other hub in resource", mod: func(c *creds) {
			c.password = sas.New(modKey, sas.Resource("other.example", testDevice, testModule), "", hour)
		}, wantRefused: true},
		{name: "expired", mod: func(c *creds) { c.password = sas.New(modKey, modRes, "", time.Now().Add(-time.Second)) }, wantRefused: true},
		{name: "malformed token", mod: func(c *creds) { c.password = "SharedAccessSignature sr=x" }, wantRefused: true},
		{name: "not a token", mod: func(c *creds) { c.password = "hunter2" }, wantRefused: true},
		{name: "policy token", mod: func(c *creds) { c.password = sas.New(modKey, modRes, "service", hour) }, wantRefused: true},
		{name: "client id differs from username", mod: func(c *creds) { c.clientID = testDevice }, wantRefused: true},
		{name: "client id of another identity", mod: func(c *creds) { c.clientID = "plain" }, wantRefused: true},
		{name: "unknown module", mod: func(c *creds) {
			c.clientID = testDevice + "/ghost"
			c.username = hub + "/" + testDevice + "/ghost/?api-version=2021-04-12"
		}, wantRefused: true},
		{name: "wrong hub in username", mod: func(c *creds) { c.username = "other.example" + c.username[len(hub):] }, wantRefused: true},
		{name: "garbage username", mod: func(c *creds) { c.username = "nonsense" }, wantRefused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, mod := testDevice, testModule
			if tt.device != "" {
				dev, mod = tt.device, ""
			}
			cr := newCreds(t, e, dev, mod)
			if tt.mod != nil {
				tt.mod(&cr)
			}
			d, err := dial(t, e, "tls://"+e.MQTTAddr(), cr)
			if tt.wantRefused {
				if !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
					t.Fatalf("connect error = %v, want CONNACK 5 (not authorized)", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			// Like edgeHub, the emulator binds a connection just after its CONNACK.
			if err := e.WaitConnected(testutil.Context(t), dev, mod); err != nil {
				t.Fatal(err)
			}
			info, ok := e.ConnInfo(dev, mod)
			if !ok || !info.Connected {
				t.Fatalf("ConnInfo = %+v, %v; want connected", info, ok)
			}
			if info.ModelID != tt.wantModel || e.ModelID(dev, mod) != tt.wantModel {
				t.Errorf("model id = %q, want %q", info.ModelID, tt.wantModel)
			}
			if info.NonstandardUsername != tt.nonstandard {
				t.Errorf("NonstandardUsername = %v, want %v", info.NonstandardUsername, tt.nonstandard)
			}
			if info.Transport != "mqtts" {
				t.Errorf("transport = %q", info.Transport)
			}
			d.c.Disconnect(100)
			if err := e.WaitConnectedState(testutil.Context(t), dev, mod, false); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestTokenExpiryDisconnects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		maxLifetime time.Duration
		tokenLife   time.Duration
	}{
		{name: "token expiry", tokenLife: 2 * time.Second},
		{name: "MaxTokenLifetime clamp", maxLifetime: time.Second, tokenLife: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// edgeHub checks tokens every 5 minutes; the test checks often.
			e := start(t, emulator.Options{MaxTokenLifetime: tt.maxLifetime, TokenCheckInterval: 100 * time.Millisecond})
			cr := newCreds(t, e, testDevice, testModule)
			cr.password = sas.New(keyOf(t, e, testDevice, testModule), sas.Resource(e.HubHostName(), testDevice, testModule), "", time.Now().Add(tt.tokenLife))
			began := time.Now()
			d, err := dial(t, e, "tls://"+e.MQTTAddr(), cr)
			if err != nil {
				t.Fatal(err)
			}
			// The token dies within 2 s and the emulator checks every
			// 100 ms: a drop comes in seconds. The wait is testutil.Timeout (1 min),
			// which a loaded machine cannot reach, while a regression waits
			// far longer: edgeHub's default check comes every 5 minutes,
			// and a token never checked is never dropped.
			if err := d.waitLost(testutil.Context(t)); err != nil {
				t.Fatal(err)
			}
			// Not before the token's expiry: se has one-second resolution,
			// hence 900 ms. A lower bound cannot flake (load only adds
			// time) and catches a connection dropped for another reason.
			if el := time.Since(began); el < 900*time.Millisecond {
				t.Errorf("dropped after %v, before the token expired", el)
			}
			if err := e.WaitConnectedState(testutil.Context(t), testDevice, testModule, false); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestSecondConnectionTakesOver(t *testing.T) {
	t.Parallel()
	e := start(t, emulator.Options{})
	first := connect(t, e, testDevice, testModule)
	second := connect(t, e, testDevice, testModule)
	if err := first.waitLost(testutil.Context(t)); err != nil {
		t.Fatal(err)
	}
	if !second.c.IsConnectionOpen() || !e.Connected(testDevice, testModule) {
		t.Fatal("the second connection is not the live one")
	}
	if got := e.Connects(testDevice, testModule); got != 2 {
		t.Errorf("Connects = %d, want 2", got)
	}
}
