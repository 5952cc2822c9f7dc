package emulator_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/sas"
)

const (
	testDevice = emulator.DefaultDeviceID
	testModule = emulator.DefaultModuleID
	testModel  = "dtmi:azure:videoanalyzer:WebSocketTunneling;1"
)

// testLogger forwards log lines to t.Log until the test's cleanups have run (logging after a
// test completes panics).
func testLogger(t *testing.T) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { // registered first, so it runs last
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// start starts an emulator on free ports in a fresh folder (unless opts.Dir is set) and
// closes it when the test ends.
func start(t *testing.T, opts emulator.Options) *emulator.Emulator {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	e, err := emulator.New(opts)
	if err != nil {
		t.Fatalf("emulator.New: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

func keyOf(t *testing.T, e *emulator.Emulator, device, module string) []byte {
	t.Helper()
	for _, id := range e.Identities() {
		if id.DeviceID == device && id.ModuleID == module {
			return id.Key
		}
	}
	t.Fatalf("no identity %s/%s", device, module)
	return nil
}

// creds are MQTT credentials; newCreds makes the documented ones.
type creds struct {
	clientID, username, password string
}

func newCreds(t *testing.T, e *emulator.Emulator, device, module string) creds {
	t.Helper()
	id := device
	if module != "" {
		id += "/" + module
	}
	return creds{
		clientID: id,
		username: e.HubHostName() + "/" + id + "/?api-version=2021-04-12&model-id=" + url.QueryEscape(testModel),
		password: sas.New(keyOf(t, e, device, module), sas.Resource(e.HubHostName(), device, module), "", time.Now().Add(time.Hour)),
	}
}

// device is a raw paho client speaking IoT Hub's topics by hand.
type device struct {
	t    *testing.T
	c    paho.Client
	lost chan error // receives the connection-lost error once

	mu      sync.Mutex
	rid     int
	waiting map[string]chan twinResponse // twin responses by $rid
	desired chan []byte
}

type twinResponse struct {
	status, version int
	body            []byte
}

// dial connects a paho client; broker is "tls://host:port" or "wss://host:port/$iothub/websocket".
func dial(t *testing.T, e *emulator.Emulator, broker string, cr creds) (*device, error) {
	t.Helper()
	d := &device{t: t, lost: make(chan error, 1), waiting: map[string]chan twinResponse{}, desired: make(chan []byte, 16)}
	o := paho.NewClientOptions().
		AddBroker(broker).
		SetClientID(cr.clientID).
		SetUsername(cr.username).
		SetPassword(cr.password).
		SetTLSConfig(e.TLSConfig(e.HubHostName())).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case d.lost <- err:
			default:
			}
		})
	d.c = paho.NewClient(o)
	tok := d.c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { d.c.Disconnect(0) })
	return d, nil
}

// connect dials the MQTT/TLS port with the documented credentials and fails the test on error.
func connect(t *testing.T, e *emulator.Emulator, devID, modID string) *device {
	t.Helper()
	d, err := dial(t, e, "tls://"+e.MQTTAddr(), newCreds(t, e, devID, modID))
	if err != nil {
		t.Fatalf("connect %s/%s: %v", devID, modID, err)
	}
	return d
}

// subscribe subscribes and returns the granted code.
func (d *device) subscribe(filter string, h paho.MessageHandler) byte {
	d.t.Helper()
	tok := d.c.Subscribe(filter, 0, h)
	if !tok.WaitTimeout(5 * time.Second) {
		d.t.Fatalf("subscribe %s timed out", filter)
	}
	if err := tok.Error(); err != nil {
		d.t.Fatalf("subscribe %s: %v", filter, err)
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

// methodHandler answers direct methods with fn's status and body.
type methodHandler func(name string, payload []byte) (int, []byte)

// serveMethods subscribes to $iothub/methods/POST/# and answers with fn.
func (d *device) serveMethods(fn methodHandler) {
	d.t.Helper()
	code := d.subscribe("$iothub/methods/POST/#", func(c paho.Client, m paho.Message) {
		rest := strings.TrimPrefix(m.Topic(), "$iothub/methods/POST/")
		name, query, _ := strings.Cut(rest, "/?")
		q, _ := url.ParseQuery(query)
		status, body := fn(name, m.Payload())
		c.Publish(fmt.Sprintf("$iothub/methods/res/%d/?$rid=%s", status, q.Get("$rid")), 0, false, body)
	})
	if code != 0 {
		d.t.Fatalf("methods subscription refused: %#x", code)
	}
}

// serveTwin subscribes to twin responses and desired pushes.
func (d *device) serveTwin() {
	d.t.Helper()
	if code := d.subscribe("$iothub/twin/res/#", func(_ paho.Client, m paho.Message) {
		path, query, _ := strings.Cut(m.Topic(), "?")
		q, _ := url.ParseQuery(query)
		status, _ := strconv.Atoi(strings.Trim(strings.TrimPrefix(path, "$iothub/twin/res/"), "/"))
		version, _ := strconv.Atoi(q.Get("$version"))
		d.mu.Lock()
		ch := d.waiting[q.Get("$rid")]
		d.mu.Unlock()
		if ch != nil {
			ch <- twinResponse{status: status, version: version, body: m.Payload()}
		}
	}); code != 0 {
		d.t.Fatalf("twin subscription refused: %#x", code)
	}
	if code := d.subscribe("$iothub/twin/PATCH/properties/desired/#", func(_ paho.Client, m paho.Message) {
		d.desired <- m.Payload()
	}); code != 0 {
		d.t.Fatalf("desired subscription refused: %#x", code)
	}
}

// twin sends a twin request ("GET" or a reported patch) and waits for its response.
func (d *device) twin(ctx context.Context, topic string, body []byte) (twinResponse, error) {
	d.mu.Lock()
	d.rid++
	rid := strconv.Itoa(d.rid)
	ch := make(chan twinResponse, 1)
	d.waiting[rid] = ch
	d.mu.Unlock()
	d.c.Publish(topic+"?$rid="+rid, 1, false, body)
	select {
	case r := <-ch:
		return r, nil
	case err := <-d.lost:
		return twinResponse{}, fmt.Errorf("connection lost: %w", err)
	case <-ctx.Done():
		return twinResponse{}, ctx.Err()
	}
}

func (d *device) getTwin(ctx context.Context) (twinResponse, error) {
	return d.twin(ctx, "$iothub/twin/GET/", nil)
}

func (d *device) patchReported(ctx context.Context, patch string) (twinResponse, error) {
	return d.twin(ctx, "$iothub/twin/PATCH/properties/reported/", []byte(patch))
}

// waitLost waits for the connection to drop.
func (d *device) waitLost(ctx context.Context) error {
	select {
	case <-d.lost:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("connection still up: %w", ctx.Err())
	}
}

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("base64 %q: %v", s, err)
	}
	return b
}
