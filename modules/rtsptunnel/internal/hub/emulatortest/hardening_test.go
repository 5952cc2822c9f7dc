package emulatortest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	. "github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/hub"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
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

// TestConcurrencyLimit checks the documented bound on method handlers (issue
// 15, item 2): 64 run at once; a call beyond them is answered 429 at once
// with the service's error shape, and the 64 are answered when they end.
func TestConcurrencyLimit(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, time.Minute)
	e := startEmulator(t, emulator.Options{Logger: slog.New(slog.DiscardHandler)})
	c := newTestClient(t, e, loadIdentity(t, ctx, e, modeEdge), func(o *Options) {
		o.Logger = testutil.TLoggerAt(t, "hub", slog.LevelInfo)
	})
	var running atomic.Int64
	release := make(chan struct{})
	c.Handle("hold", func(ctx context.Context, p []byte) (int, []byte) {
		running.Add(1)
		return hold(ctx, release, p)
	})
	runSubscribed(t, ctx, e, c)
	var wg sync.WaitGroup
	errs := make(chan string, MaxConcurrentMethods)
	for i := range MaxConcurrentMethods {
		wg.Go(func() {
			p := fmt.Sprintf(`{"i":%d}`, i)
			status, resp, err := e.InvokeMethod(ctx, testDevice, testModule, "hold", json.RawMessage(p), 50*time.Second)
			if err != nil || status != 200 || string(resp) != p {
				errs <- fmt.Sprintf("held call %d: %d %s %v", i, status, resp, err)
			}
		})
	}
	for running.Load() < MaxConcurrentMethods {
		if ctx.Err() != nil {
			t.Fatalf("only %d handlers started", running.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	status, resp, err := e.InvokeMethod(ctx, testDevice, testModule, "hold", json.RawMessage(`{"i":"one too many"}`), 50*time.Second)
	if err != nil || status != 429 || string(resp) != `{"code":"429","target":"hold","message":"too many concurrent method calls"}` {
		t.Errorf("call 65: %d %s %v, want 429 at once", status, resp, err)
	}
	if n := running.Load(); n != MaxConcurrentMethods {
		t.Errorf("%d handlers ran, want %d (the refused call must not start one)", n, MaxConcurrentMethods)
	}
	close(release)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestDesiredGapReadsTwinInCallback is traps 1 and 2 on the path where a paho
// callback itself waits for paho (issue 15, item 7): a desired patch that
// arrives with a gap in $version makes onDesired read the full twin from
// inside paho's message callback. With paho's ordered routing (OrderMatters
// true, its default) the twin response is queued behind that very callback
// and the read can only time out (after 30 s, then the patch is delivered
// alone); with SetOrderMatters(false) the full twin is delivered through
// OnTwin. The test fails if SetOrderMatters(false) is removed from dial.
func TestDesiredGapReadsTwinInCallback(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 25*time.Second) // less than the 30 s the ordered read would need
	e := startEmulator(t, emulator.Options{})
	ev := newEvents()
	log := testutil.TLogger(t, "hub")
	c := newTestClient(t, e, loadIdentity(t, ctx, e, modeEdge), func(o *Options) {
		o.Logger = log
		ev.hook(o)
	})
	startRun(t, ctx, c)
	ev.wait(t, ctx, "OnConnected", func(ev *events) bool { return ev.connected == 1 })
	// Lose a patch on the way (the emulator's fault knob): the next one the
	// client gets is a version ahead of what it holds.
	e.LoseDesiredPatches(testDevice, testModule, 1)
	if _, err := e.PatchDesired(testDevice, testModule, json.RawMessage(`{"lost":true}`)); err != nil {
		t.Fatal(err)
	}
	v, err := e.PatchDesired(testDevice, testModule, json.RawMessage(`{"gap":true}`))
	if err != nil {
		t.Fatal(err)
	}
	ev.wait(t, ctx, "the full twin read from the callback", func(ev *events) bool {
		for _, d := range ev.twins {
			if version(d) == v && strings.Contains(string(d), `"gap":true`) && strings.Contains(string(d), `"lost":true`) {
				return true
			}
		}
		return false
	})
	if n := testutil.Logged(log, "desired patches arrived with a gap; reading the full twin"); n != 1 {
		t.Errorf("gap path taken %d times, want 1", n)
	}
	if n := testutil.Logged(log, "failed to read the full twin; delivering the patch alone"); n != 0 {
		t.Errorf("the full twin could not be read from the callback")
	}
}

// fakeWorkload stands in for the IoT Edge workload API on loopback HTTP: it
// passes requests to the emulator's workload socket, or answers 500, or
// hangs, as the test says.
type fakeWorkload struct {
	mode  atomic.Value // "ok", "500", "hang" or "badsig" (a digest the hub refuses)
	signs atomic.Int64 // sign requests received
	hang  chan struct{}
	proxy *httputil.ReverseProxy
}

func newFakeWorkload(t *testing.T, e *emulator.Emulator) (*fakeWorkload, string) {
	t.Helper()
	sock := strings.TrimPrefix(e.WorkloadURI(), "unix://")
	var d net.Dialer
	fw := &fakeWorkload{hang: make(chan struct{})}
	fw.mode.Store("ok")
	target, _ := url.Parse("http://workload")
	fw.proxy = httputil.NewSingleHostReverseProxy(target)
	fw.proxy.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "unix", sock)
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: fw}
	go srv.Serve(ln)
	t.Cleanup(func() {
		close(fw.hang)
		srv.Close()
	})
	return fw, "http://" + ln.Addr().String()
}

func (fw *fakeWorkload) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/sign") {
		fw.signs.Add(1)
		switch fw.mode.Load() {
		case "500":
			http.Error(w, `{"message":"HSM unavailable"}`, http.StatusInternalServerError)
			return
		case "hang":
			select {
			case <-fw.hang:
			case <-r.Context().Done():
			}
			return
		case "badsig":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"digest":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"}`))
			return
		}
	}
	fw.proxy.ServeHTTP(w, r)
}

// TestWorkloadFailures covers a workload API that answers 500 or hangs
// (issue 15, item 6). At start: the client does not connect, logs the
// workload API's error and retries; it connects once the API answers again.
// At token renewal: the renewal fails within its bound (renewTimeout for a
// hang), the old connection is kept and keeps answering methods, and the
// token is renewed once the API answers again. A token the hub refuses
// ("badsig": the renewal unsubscribed the old connection from methods, then
// its connect fails) leaves the old connection subscribed again, answering.
func TestWorkloadFailures(t *testing.T) {
	t.Parallel()
	ctx := testutil.Context(t, 2*time.Minute)
	// Tokens are not enforced here: the old connection outlives its renewal time.
	e := startEmulator(t, emulator.Options{Logger: slog.New(slog.DiscardHandler)})
	fw, uri := newFakeWorkload(t, e)
	lines, err := e.ModuleEnv(testDevice, testModule)
	getenv := envMap(t)(lines, err)
	id, err := identity.Load(ctx, func(k string) string {
		if k == identity.EnvWorkloadURI {
			return uri
		}
		return getenv(k)
	})
	if err != nil {
		t.Fatal(err)
	}
	log := testutil.TLoggerAt(t, "hub", slog.LevelInfo)
	c := newTestClient(t, e, id, func(o *Options) {
		o.TokenLifetime = 4 * time.Second
		o.Logger = log
	})
	c.Handle("echo", echo)

	// At start.
	fw.mode.Store("500")
	startRun(t, ctx, c)
	waitLogged(t, ctx, log, "failed to connect", 2)
	if e.Connected(testDevice, testModule) {
		t.Fatal("connected without a token")
	}
	if got := testutil.LastLogged(log, "failed to connect"); !strings.Contains(got, "workload API") || !strings.Contains(got, "500") || !strings.Contains(got, "HSM unavailable") {
		t.Errorf("the start-up error does not say what failed: %s", got)
	}
	fw.mode.Store("ok")
	if err := e.WaitSubscribed(ctx, testDevice, testModule, filterMethods); err != nil {
		t.Fatal(err)
	}

	// At renewal: 500, a hang, a refused token. The old connection answers
	// throughout (callers retry 404103, as the relay does: a renewal attempt
	// that gets as far as unsubscribing makes a short window of them).
	for _, mode := range []string{"500", "hang", "badsig"} {
		before := testutil.Logged(log, "failed to renew the token; keeping the current connection")
		fw.mode.Store(mode)
		waitLogged(t, ctx, log, "failed to renew the token; keeping the current connection", before+1)
		if got := testutil.LastLogged(log, "failed to renew the token; keeping the current connection"); !strings.Contains(got, "workload API") && !strings.Contains(got, "deadline") && !(mode == "badsig" && strings.Contains(got, "not Authorized")) {
			t.Errorf("%s: the renewal error does not say what failed: %s", mode, got)
		}
		if status, resp, _, err := invokeRetrying(ctx, e, "echo", json.RawMessage(`"`+mode+`"`), 10*time.Second); err != nil || status != 200 || string(resp) != `"`+mode+`"` {
			t.Errorf("%s: call on the kept connection: %d %s %v", mode, status, resp, err)
		}
		if n := e.Connects(testDevice, testModule); n != 1 {
			t.Errorf("%s: %d connects, want the first connection kept", mode, n)
		}
	}
	if n := testutil.Logged(log, "closing the connection: it cannot take method calls again"); n != 0 {
		t.Errorf("the kept connection could not subscribe to methods again (%d times)", n)
	}
	fw.mode.Store("ok")
	if err := e.WaitConnects(ctx, testDevice, testModule, 2); err != nil {
		t.Fatal(err)
	}
	// edgeHub binds the new connection before its subscriptions are back.
	if err := e.WaitSubscribed(ctx, testDevice, testModule, filterMethods); err != nil {
		t.Fatal(err)
	}
	if status, _ := call(t, ctx, e, "echo", `"renewed"`); status != 200 {
		t.Errorf("call after the renewal: %d", status)
	}
}

// waitLogged waits until message was logged at least n times through l.
func waitLogged(t *testing.T, ctx context.Context, l *slog.Logger, message string, n int) {
	t.Helper()
	testutil.WaitFor(t, ctx, fmt.Sprintf("%q logged %d times", message, n), func() bool { return testutil.Logged(l, message) >= n })
}
