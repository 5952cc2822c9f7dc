package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/upstream"
)

// The tests run a real RTSP camera (gortsplib's server, one H.264 media on
// /stream, a synthetic RTP packet every few milliseconds) and a plain TCP
// connection to it as the tunnel. They never sleep to wait for something:
// they poll against the test's deadline (testutil.WaitFor). Time only bounds from
// below ("not before the linger"), never from above, so that a loaded
// machine makes them slower, not red.

const camName = "door"

// testTimeout is every test's deadline.
const testTimeout = 20 * time.Second

// testDialer is the tunnel: a TCP connection to addr. hook, when set, runs
// first; its error fails the dial.
type testDialer struct {
	dials atomic.Int64

	mu    sync.Mutex
	addr  string                          // guarded by mu
	hook  func(ctx context.Context) error // guarded by mu
	conns []*trackedConn                  // guarded by mu: every conn returned
}

func (d *testDialer) Dial(ctx context.Context) (net.Conn, error) {
	d.dials.Add(1)
	d.mu.Lock()
	addr, hook := d.addr, d.hook
	d.mu.Unlock()
	if hook != nil {
		if err := hook(ctx); err != nil {
			return nil, err
		}
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.conns = append(d.conns, tc)
	return tc, nil
}

// open returns how many of the dialed conns the upstream has not closed.
func (d *testDialer) open() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.conns {
		if !c.closed.Load() {
			n++
		}
	}
	return n
}

// breakAll closes the dialed conns under the upstream, as a tunnel that
// drops does.
func (d *testDialer) breakAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Conn.Close()
	}
}

// trackedConn records that the upstream closed it.
type trackedConn struct {
	net.Conn
	closed atomic.Bool
}

func (c *trackedConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

func (d *testDialer) set(addr string, hook func(context.Context) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addr, d.hook = addr, hook
}

// blockingHook returns a hook that blocks until the dial's ctx is done,
// closing entered when the first dial starts and exited when it returns.
func blockingHook() (hook func(context.Context) error, entered, exited <-chan struct{}) {
	in, out := make(chan struct{}), make(chan struct{})
	var inOnce, outOnce sync.Once
	return func(ctx context.Context) error {
		inOnce.Do(func() { close(in) })
		<-ctx.Done()
		outOnce.Do(func() { close(out) })
		return ctx.Err()
	}, in, out
}

type env struct {
	cam  *testutil.Camera
	dial *testDialer
	src  *upstream.Source
	m    *metrics.Metrics
	logs *testutil.LogBuffer

	dialExited <-chan struct{} // TestClose: closed when a blocked dial returned
}

// newEnv starts a camera and a Source reading it through testDialer, with
// short timers; mod adjusts the Source before Initialize.
func newEnv(t *testing.T, mod func(*upstream.Source)) *env {
	t.Helper()
	e := &env{cam: testutil.NewCamera(t, testutil.CameraOptions{}), logs: &testutil.LogBuffer{}}
	e.dial = &testDialer{addr: e.cam.Addr()}
	var err error
	if e.m, err = metrics.New(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	// The viewers' side: the server the upstream's stream belongs to.
	relay := &gortsplib.Server{Handler: struct{}{}, RTSPAddress: "127.0.0.1:0"}
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(relay.Close)
	e.src = &upstream.Source{
		Camera:          camName,
		URL:             &base.URL{Scheme: "rtsp", Host: "localhost:554", Path: testutil.CameraPath},
		Dial:            e.dial.Dial,
		Server:          relay,
		Linger:          200 * time.Millisecond,
		ReconnectWindow: 10 * time.Second,
		RetryMin:        10 * time.Millisecond,
		RetryMax:        50 * time.Millisecond,
		Logger:          e.logs.Logger(slog.LevelDebug),
		Metrics:         e.m,
	}
	if mod != nil {
		mod(e.src)
	}
	if err := e.src.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.src.Close()
		if t.Failed() {
			t.Logf("upstream logs:\n%s", e.logs.String())
		}
	})
	return e
}

// opens returns how many openings relay_upstream_open_duration_seconds
// observed for the camera.
func (e *env) opens(t *testing.T) uint64 {
	t.Helper()
	var m dto.Metric
	if err := e.m.UpstreamOpen.WithLabelValues(camName).(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// waitStatus waits for Status to show state and holds. Acquire answers
// before the snapshot is updated, so a test polls it.
func (e *env) waitStatus(ctx context.Context, t *testing.T, state string, holds int) {
	t.Helper()
	testutil.WaitFor(ctx, t, fmt.Sprintf("state %s with %d holds", state, holds), func() bool {
		st := e.src.Status()
		return st.State == state && st.Holds == holds
	})
}

func (e *env) state() string { return e.src.Status().State }

func (e *env) restarts() float64 {
	return promtest.ToFloat64(e.m.UpstreamRestarts.WithLabelValues(camName))
}

// stateMetric returns relay_upstream_state{state} for the camera.
func (e *env) stateMetric(state string) float64 {
	return promtest.ToFloat64(e.m.UpstreamState.WithLabelValues(camName, state))
}

type acquired struct {
	stream *gortsplib.ServerStream
	err    error
}

// acquireAsync runs Acquire in a goroutine; read its result with result.
func (e *env) acquireAsync(ctx context.Context) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		st, err := e.src.Acquire(ctx)
		ch <- acquired{st, err}
	}()
	return ch
}

func result(ctx context.Context, t *testing.T, ch <-chan acquired) acquired {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		t.Fatal("timed out waiting for Acquire")
		return acquired{}
	}
}

// released calls Release in a goroutine and fails if it does not return.
func released(ctx context.Context, t *testing.T, src *upstream.Source) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		src.Release()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Release did not return")
	}
}

// streamClosed reports whether st was closed. Only call it once st should
// be closed or has no other writer.
func streamClosed(st *gortsplib.ServerStream) bool {
	m := st.Desc.Medias[0]
	err := st.WritePacketRTP(m, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: m.Formats[0].PayloadType()}, Payload: []byte{0x41}})
	return err != nil
}

func TestInitializeRequiresFields(t *testing.T) {
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	full := func() *upstream.Source {
		return &upstream.Source{
			Camera:  camName,
			URL:     &base.URL{Scheme: "rtsp", Host: "localhost:554", Path: testutil.CameraPath},
			Dial:    func(context.Context) (net.Conn, error) { return nil, errors.New("unused") },
			Server:  &gortsplib.Server{},
			Logger:  slog.New(slog.DiscardHandler),
			Metrics: m,
		}
	}
	tests := []struct {
		name string
		mod  func(*upstream.Source)
	}{
		{"no camera", func(s *upstream.Source) { s.Camera = "" }},
		{"no URL", func(s *upstream.Source) { s.URL = nil }},
		{"no dialer", func(s *upstream.Source) { s.Dial = nil }},
		{"no server", func(s *upstream.Source) { s.Server = nil }},
		{"no logger", func(s *upstream.Source) { s.Logger = nil }},
		{"no metrics", func(s *upstream.Source) { s.Metrics = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			s := full()
			tt.mod(s)
			if err := s.Initialize(); err == nil {
				s.Close()
				t.Fatal("Initialize succeeded")
			}
		})
	}
}

// TestOnDemandAndLinger: nothing dials before the first viewer; concurrent
// viewers share one tunnel and one stream; the tunnel closes a Linger after
// the last viewer left, and the next viewer dials again.
func TestOnDemandAndLinger(t *testing.T) {
	const linger = 300 * time.Millisecond
	for _, viewers := range []int{1, 8} {
		t.Run(fmt.Sprintf("%d viewers", viewers), func(t *testing.T) {
			testutil.CheckGoroutines(t)
			ctx := testutil.Context(t, testTimeout)
			e := newEnv(t, func(s *upstream.Source) { s.Linger = linger })

			// A spontaneous dial would come at once; give it a moment.
			time.Sleep(50 * time.Millisecond)
			if n := e.dial.dials.Load(); n != 0 || e.state() != metrics.StateIdle || e.cam.Active() != 0 {
				t.Fatalf("before any viewer: %d dials, state %s, %d camera connections; want 0, idle, 0", n, e.state(), e.cam.Active())
			}

			results := make([]acquired, viewers)
			var wg sync.WaitGroup
			for i := range viewers {
				wg.Go(func() {
					st, err := e.src.Acquire(ctx)
					results[i] = acquired{st, err}
				})
			}
			wg.Wait()
			first := results[0].stream
			for i, r := range results {
				if r.err != nil {
					t.Fatalf("viewer %d: Acquire: %v", i, r.err)
				}
				if r.stream == nil || r.stream != first {
					t.Fatalf("viewer %d got stream %p, viewer 0 got %p; want one shared stream", i, r.stream, first)
				}
			}
			if n := e.dial.dials.Load(); n != 1 {
				t.Errorf("%d dials for %d viewers, want 1", n, viewers)
			}
			if n := e.cam.Plays.Load(); n != 1 {
				t.Errorf("camera got %d PLAY requests, want 1", n)
			}
			e.waitStatus(ctx, t, metrics.StateLive, viewers)
			if got := e.stateMetric(metrics.StateLive); got != 1 {
				t.Errorf("relay_upstream_state{state=live} = %v, want 1", got)
			}
			if n := e.cam.Active(); n != 1 {
				t.Errorf("camera has %d connections, want 1", n)
			}

			for range viewers - 1 {
				released(ctx, t, e.src)
			}
			left := time.Now() // before the last Release arms the linger
			released(ctx, t, e.src)
			testutil.WaitFor(ctx, t, "the upstream to close after the linger", func() bool {
				return e.state() == metrics.StateIdle && e.cam.Active() == 0
			})
			if d := time.Since(left); d < linger {
				t.Errorf("upstream closed %v after the last viewer left, before the linger of %v", d, linger)
			}
			if n := e.dial.open(); n != 0 {
				t.Errorf("%d tunnels left open", n)
			}
			if st := e.src.Status(); st.Holds != 0 {
				t.Errorf("Status().Holds = %d after every Release, want 0", st.Holds)
			}
			if got := e.stateMetric(metrics.StateIdle); got != 1 {
				t.Errorf("relay_upstream_state{state=idle} = %v, want 1", got)
			}
			if !streamClosed(first) {
				t.Error("the stream is still open after the upstream closed")
			}

			// The next viewer dials again and gets a new stream.
			r := result(ctx, t, e.acquireAsync(ctx))
			if r.err != nil {
				t.Fatalf("Acquire after the linger: %v", r.err)
			}
			if r.stream == first {
				t.Error("Acquire after the linger returned the closed stream")
			}
			if n := e.dial.dials.Load(); n != 2 {
				t.Errorf("%d dials after a viewer came back, want 2", n)
			}
			if n := e.opens(t); n != 2 {
				t.Errorf("relay_upstream_open_duration_seconds counts %d openings, want 2", n)
			}
			released(ctx, t, e.src)
		})
	}
}

// TestLingerCanceledByNewViewer: a viewer arriving during the linger keeps
// the tunnel and the stream, and the linger does not close them under it.
func TestLingerCanceledByNewViewer(t *testing.T) {
	// The viewer must come back within the linger: 3 s is far beyond a
	// release and an Acquire on a loaded machine (milliseconds), so only
	// a linger that ignores the new viewer closes the stream.
	const linger = 3 * time.Second
	testutil.CheckGoroutines(t)
	ctx := testutil.Context(t, testTimeout)
	e := newEnv(t, func(s *upstream.Source) { s.Linger = linger })
	r := result(ctx, t, e.acquireAsync(ctx))
	if r.err != nil {
		t.Fatal(r.err)
	}
	released(ctx, t, e.src)
	r2 := result(ctx, t, e.acquireAsync(ctx))
	if r2.err != nil {
		t.Fatal(r2.err)
	}
	if r2.stream != r.stream || e.dial.dials.Load() != 1 {
		t.Fatalf("a viewer back within the linger got a new stream (%p, then %p) over %d dials; want the same, 1 dial",
			r.stream, r2.stream, e.dial.dials.Load())
	}
	time.Sleep(linger + 200*time.Millisecond) // past the linger that was armed
	if st := e.src.Status(); st.State != metrics.StateLive || st.Holds != 1 || e.cam.Active() != 1 {
		t.Fatalf("Status() = %+v with %d camera connections after the linger; want live with 1 hold, 1 connection", st, e.cam.Active())
	}
	released(ctx, t, e.src)
}

// TestReconnectKeepsStream: the tunnel or camera drops while a viewer holds
// the upstream; it reconnects with the same stream, and a viewer arriving
// meanwhile waits for it.
func TestReconnectKeepsStream(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*upstream.Source)
		drop    func(e *env)
		recover func(e *env)
	}{
		{
			name: "camera closes the connection",
			drop: func(e *env) { e.cam.Drop() },
		},
		{
			name: "tunnel drops",
			drop: func(e *env) { e.dial.breakAll() },
		},
		{
			name: "camera stops sending",
			mod:  func(s *upstream.Source) { s.ReadTimeout = 2 * time.Second }, // far beyond a gap in a 5 ms stream on a loaded machine
			drop: func(e *env) { e.cam.Paused.Store(true) },
			// Sending again before the retry is let through, so that the
			// new session does not time out as well.
			recover: func(e *env) { e.cam.Paused.Store(false) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			ctx := testutil.Context(t, testTimeout)
			e := newEnv(t, tt.mod)
			first := result(ctx, t, e.acquireAsync(ctx))
			if first.err != nil {
				t.Fatal(first.err)
			}

			// Hold the reconnecting dial until the test has looked.
			gate := make(chan struct{})
			e.dial.set(e.cam.Addr(), func(ctx context.Context) error {
				select {
				case <-gate:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			tt.drop(e)
			testutil.WaitFor(ctx, t, "the upstream to reconnect", func() bool {
				return e.state() == metrics.StateReconnecting && e.dial.dials.Load() == 2
			})
			if got := e.restarts(); got != 1 {
				t.Errorf("relay_upstream_restarts_total = %v, want 1", got)
			}
			if got := e.stateMetric(metrics.StateReconnecting); got != 1 {
				t.Errorf("relay_upstream_state{state=reconnecting} = %v, want 1", got)
			}

			// A viewer arriving now waits for the reconnect.
			waiting := e.acquireAsync(ctx)
			testutil.WaitFor(ctx, t, "the second viewer's hold", func() bool { return e.src.Status().Holds == 2 })
			select {
			case r := <-waiting:
				t.Fatalf("Acquire returned while reconnecting: %p, %v", r.stream, r.err)
			default:
			}
			if tt.recover != nil {
				tt.recover(e)
			}
			close(gate)
			r := result(ctx, t, waiting)
			if r.err != nil {
				t.Fatalf("Acquire while reconnecting: %v", r.err)
			}
			if r.stream != first.stream {
				t.Errorf("the stream changed across the reconnect (%p, then %p); viewers would be cut off", first.stream, r.stream)
			}
			e.waitStatus(ctx, t, metrics.StateLive, 2)
			if n := e.cam.Plays.Load(); n != 2 {
				t.Errorf("camera got %d PLAY requests, want 2", n)
			}
			testutil.WaitFor(ctx, t, "the camera to see one connection", func() bool { return e.cam.Active() == 1 })
			if got := e.restarts(); got != 1 {
				t.Errorf("relay_upstream_restarts_total = %v after the reconnect, want 1", got)
			}
			if n := e.dial.dials.Load(); n != 2 {
				t.Errorf("%d dials, want 2", n)
			}
			released(ctx, t, e.src)
			released(ctx, t, e.src)
		})
	}
}

// TestReconnectWindowEnds: the tunnel cannot come back; after the window,
// waiting viewers fail, the stream closes (ending the viewers' sessions)
// and the upstream is idle until the next viewer.
func TestReconnectWindowEnds(t *testing.T) {
	errDown := errors.New("tunnel down")
	for _, window := range []time.Duration{0, 300 * time.Millisecond} {
		t.Run(window.String(), func(t *testing.T) {
			testutil.CheckGoroutines(t)
			ctx := testutil.Context(t, testTimeout)
			e := newEnv(t, func(s *upstream.Source) {
				s.ReconnectWindow = window
				s.Linger = 5 * time.Second // not the linger that closes it
			})
			first := result(ctx, t, e.acquireAsync(ctx))
			if first.err != nil {
				t.Fatal(first.err)
			}
			e.dial.set(e.cam.Addr(), func(context.Context) error { return errDown })
			dropped := time.Now()
			e.cam.Drop()

			var waiting <-chan acquired
			if window > 0 {
				testutil.WaitFor(ctx, t, "reconnecting", func() bool { return e.state() == metrics.StateReconnecting })
				waiting = e.acquireAsync(ctx)
			}
			testutil.WaitFor(ctx, t, "the upstream to give up", func() bool { return e.state() == metrics.StateIdle })
			if d := time.Since(dropped); d < window {
				t.Errorf("gave up %v after the drop, before the window of %v", d, window)
			}
			if waiting != nil {
				r := result(ctx, t, waiting)
				if r.err == nil || !strings.Contains(r.err.Error(), errDown.Error()) {
					t.Errorf("waiting Acquire: %p, %v; want an error saying %q", r.stream, r.err, errDown)
				}
				testutil.WaitFor(ctx, t, "the waiting viewer's hold to go", func() bool { return e.src.Status().Holds == 1 })
			}
			if !streamClosed(first.stream) {
				t.Error("the stream is still open after the window ended")
			}
			if got := e.restarts(); got != 1 {
				t.Errorf("relay_upstream_restarts_total = %v, want 1", got)
			}
			// With a window, the last error is a failed redial; without,
			// the drop itself.
			wantErr := "camera session"
			if window > 0 {
				wantErr = errDown.Error()
			}
			if st := e.src.Status(); !strings.Contains(st.LastErr, wantErr) {
				t.Errorf("Status().LastErr = %q, want it to mention %q", st.LastErr, wantErr)
			}
			// No retries after giving up.
			n := e.dial.dials.Load()
			time.Sleep(200 * time.Millisecond) // several RetryMax
			if m := e.dial.dials.Load(); m != n {
				t.Errorf("%d more dials after giving up", m-n)
			}
			released(ctx, t, e.src) // the first viewer's session ended

			// The next viewer opens a new stream.
			e.dial.set(e.cam.Addr(), nil)
			r := result(ctx, t, e.acquireAsync(ctx))
			if r.err != nil {
				t.Fatalf("Acquire after the camera came back: %v", r.err)
			}
			if r.stream == first.stream {
				t.Error("got the closed stream back")
			}
			// A new opening, not a reconnect: its duration is observed.
			if n := e.opens(t); n != 2 {
				t.Errorf("relay_upstream_open_duration_seconds counts %d openings, want 2", n)
			}
			released(ctx, t, e.src)
		})
	}
}

// TestStaleWindowAfterIdle: when the last viewer leaves during a
// reconnect and the reconnect then fails, the upstream goes idle; the next
// viewer's opening is a fresh one, which the old reconnect window must not
// cut short.
func TestStaleWindowAfterIdle(t *testing.T) {
	const window = 300 * time.Millisecond
	testutil.CheckGoroutines(t)
	ctx := testutil.Context(t, testTimeout)
	e := newEnv(t, func(s *upstream.Source) {
		s.ReconnectWindow = window
		s.Linger = 10 * time.Second // the linger does not clear anything here
	})
	if r := result(ctx, t, e.acquireAsync(ctx)); r.err != nil {
		t.Fatal(r.err)
	}

	// The reconnect's dial hangs until the viewer has left, then fails.
	fail := make(chan struct{})
	entered := make(chan struct{}, 1)
	e.dial.set(e.cam.Addr(), func(ctx context.Context) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-fail:
			return errors.New("tunnel down")
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	dropped := time.Now()
	e.cam.Drop()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("no reconnect")
	}
	released(ctx, t, e.src)
	close(fail)
	testutil.WaitFor(ctx, t, "idle", func() bool { return e.state() == metrics.StateIdle })

	// A new viewer; its opening is slow (held until after the old window).
	slow := make(chan struct{})
	e.dial.set(e.cam.Addr(), func(ctx context.Context) error {
		select {
		case <-slow:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	ch := e.acquireAsync(ctx)
	testutil.WaitFor(ctx, t, "the opening", func() bool { return e.state() == metrics.StateOpening })
	// Time only bounds from below here: the check below runs no sooner
	// than twice the old window after the drop, and the opening cannot end
	// before the test releases its dial (slow), however slow the machine.
	// A stale window would have failed the opening by then.
	for time.Since(dropped) < 2*window {
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case r := <-ch:
		t.Fatalf("the opening ended before its dial returned: %p, %v", r.stream, r.err)
	default:
	}
	close(slow)
	if r := result(ctx, t, ch); r.err != nil {
		t.Fatalf("Acquire: %v", r.err)
	}
	if n := e.opens(t); n != 2 {
		t.Errorf("relay_upstream_open_duration_seconds counts %d openings, want 2", n)
	}
	released(ctx, t, e.src)
}

// TestOpenFails: when the upstream cannot open, every waiting viewer gets
// the error at once (no retries behind their backs), keeps no hold, and the
// next viewer tries again.
func TestOpenFails(t *testing.T) {
	errDial := errors.New("module offline")
	tests := []struct {
		name    string
		fail    func(e *env)
		fix     func(e *env)
		wantErr string
	}{
		{
			name:    "dial fails",
			fail:    func(e *env) { e.dial.set(e.cam.Addr(), func(context.Context) error { return errDial }) },
			fix:     func(e *env) { e.dial.set(e.cam.Addr(), nil) },
			wantErr: errDial.Error(),
		},
		{
			name:    "camera answers 404",
			fail:    func(e *env) { e.cam.Refuse.Store(true) },
			fix:     func(e *env) { e.cam.Refuse.Store(false) },
			wantErr: "404",
		},
	}
	const viewers = 3
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			ctx := testutil.Context(t, testTimeout)
			// Long backoffs: a hidden retry would make the viewers wait.
			e := newEnv(t, func(s *upstream.Source) { s.RetryMin, s.RetryMax = time.Hour, time.Hour })
			tt.fail(e)
			var chs []<-chan acquired
			for range viewers {
				chs = append(chs, e.acquireAsync(ctx))
			}
			for i, ch := range chs {
				r := result(ctx, t, ch)
				if r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr) {
					t.Errorf("viewer %d: Acquire = %p, %v; want an error containing %q", i, r.stream, r.err, tt.wantErr)
				}
				if tt.name == "dial fails" && !errors.Is(r.err, errDial) {
					t.Errorf("viewer %d: %v does not wrap the dialer's error", i, r.err)
				}
			}
			if n := e.dial.dials.Load(); n < 1 || n > viewers {
				t.Errorf("%d dials for %d viewers, want 1..%d", n, viewers, viewers)
			}
			testutil.WaitFor(ctx, t, "no holds and idle", func() bool {
				st := e.src.Status()
				return st.Holds == 0 && st.State == metrics.StateIdle
			})
			testutil.WaitFor(ctx, t, "the camera connection to close", func() bool { return e.cam.Active() == 0 })
			if st := e.src.Status(); !strings.Contains(st.LastErr, tt.wantErr) {
				t.Errorf("Status().LastErr = %q, want it to contain %q", st.LastErr, tt.wantErr)
			}
			if got := e.restarts(); got != 0 {
				t.Errorf("relay_upstream_restarts_total = %v, want 0 (it never was live)", got)
			}

			tt.fix(e)
			before := e.dial.dials.Load()
			r := result(ctx, t, e.acquireAsync(ctx))
			if r.err != nil {
				t.Fatalf("Acquire once the camera is back: %v", r.err)
			}
			if n := e.dial.dials.Load(); n != before+1 {
				t.Errorf("%d dials for the next viewer, want 1", n-before)
			}
			e.waitStatus(ctx, t, metrics.StateLive, 1) // failed viewers hold nothing
			released(ctx, t, e.src)
			testutil.WaitFor(ctx, t, "idle after the linger", func() bool { return e.state() == metrics.StateIdle && e.cam.Active() == 0 })
		})
	}
}

// TestAcquireCanceledWhileOpening: a viewer that gives up while the
// upstream opens takes its hold back, and the linger then stops the
// attempt (the tunnel is not left half open).
func TestAcquireCanceledWhileOpening(t *testing.T) {
	tests := []struct {
		name string
		// stall makes the opening hang and returns a channel closed once
		// the attempt was stopped.
		stall func(t *testing.T, e *env) (stopped <-chan struct{})
	}{
		{
			name: "during the dial",
			stall: func(t *testing.T, e *env) <-chan struct{} {
				hook, _, exited := blockingHook()
				e.dial.set(e.cam.Addr(), hook)
				return exited
			},
		},
		{
			name: "camera does not answer",
			stall: func(t *testing.T, e *env) <-chan struct{} {
				ln := testutil.Listen(t)
				closed := make(chan struct{})
				go func() {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					defer c.Close()
					var buf [4096]byte
					for {
						if _, err := c.Read(buf[:]); err != nil {
							close(closed) // the upstream hung up
							return
						}
					}
				}()
				e.dial.set(ln.Addr().String(), nil)
				return closed
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			ctx := testutil.Context(t, testTimeout)
			e := newEnv(t, func(s *upstream.Source) { s.Linger = 100 * time.Millisecond })
			stopped := tt.stall(t, e)

			actx, cancel := context.WithCancel(ctx)
			ch := e.acquireAsync(actx)
			testutil.WaitFor(ctx, t, "the opening", func() bool {
				return e.dial.dials.Load() == 1 && e.src.Status().Holds == 1 && e.state() == metrics.StateOpening
			})
			cancel()
			r := result(ctx, t, ch)
			if !errors.Is(r.err, context.Canceled) {
				t.Fatalf("Acquire = %p, %v; want context.Canceled", r.stream, r.err)
			}
			testutil.WaitFor(ctx, t, "the hold to be given back", func() bool { return e.src.Status().Holds == 0 })
			select {
			case <-stopped:
			case <-ctx.Done():
				t.Fatal("the opening attempt was not stopped after the linger")
			}
			testutil.WaitFor(ctx, t, "idle", func() bool { return e.state() == metrics.StateIdle })

			e.dial.set(e.cam.Addr(), nil)
			r = result(ctx, t, e.acquireAsync(ctx))
			if r.err != nil {
				t.Fatalf("Acquire after the canceled one: %v", r.err)
			}
			e.waitStatus(ctx, t, metrics.StateLive, 1)
			released(ctx, t, e.src)
		})
	}
}

// TestClose: Close ends the tunnel and the stream, fails waiting and later
// Acquires with ErrClosed, does not block Release, and leaves no goroutine
// behind (testutil.CheckGoroutines).
func TestClose(t *testing.T) {
	tests := []struct {
		name string
		// setup brings the upstream to the state under test and returns
		// the Acquires that are waiting.
		setup func(ctx context.Context, t *testing.T, e *env) []<-chan acquired
	}{
		{
			name: "opening",
			setup: func(ctx context.Context, t *testing.T, e *env) []<-chan acquired {
				hook, _, exited := blockingHook()
				e.dial.set(e.cam.Addr(), hook)
				e.dialExited = exited
				var chs []<-chan acquired
				for range 3 {
					chs = append(chs, e.acquireAsync(ctx))
				}
				testutil.WaitFor(ctx, t, "3 holds", func() bool { return e.src.Status().Holds == 3 })
				return chs
			},
		},
		{
			name: "live",
			setup: func(ctx context.Context, t *testing.T, e *env) []<-chan acquired {
				for range 2 {
					if r := result(ctx, t, e.acquireAsync(ctx)); r.err != nil {
						t.Fatal(r.err)
					}
				}
				return nil
			},
		},
		{
			name: "reconnecting",
			setup: func(ctx context.Context, t *testing.T, e *env) []<-chan acquired {
				if r := result(ctx, t, e.acquireAsync(ctx)); r.err != nil {
					t.Fatal(r.err)
				}
				hook, entered, _ := blockingHook()
				e.dial.set(e.cam.Addr(), hook)
				e.cam.Drop()
				select {
				case <-entered:
				case <-ctx.Done():
					t.Fatal("no reconnect")
				}
				ch := e.acquireAsync(ctx)
				testutil.WaitFor(ctx, t, "2 holds", func() bool { return e.src.Status().Holds == 2 })
				return []<-chan acquired{ch}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			ctx := testutil.Context(t, testTimeout)
			e := newEnv(t, nil)
			waiting := tt.setup(ctx, t, e)

			closed := make(chan struct{})
			go func() {
				e.src.Close()
				close(closed)
			}()
			select {
			case <-closed:
			case <-ctx.Done():
				t.Fatal("Close did not return")
			}
			// Close waits for everything to stop: the tunnel is closed by
			// the time it returns.
			if n := e.dial.open(); n != 0 {
				t.Errorf("%d tunnels still open when Close returned", n)
			}
			if e.dialExited != nil {
				select {
				case <-e.dialExited:
				default:
					t.Error("the dial was still running when Close returned")
				}
			}
			for i, ch := range waiting {
				if r := result(ctx, t, ch); !errors.Is(r.err, upstream.ErrClosed) {
					t.Errorf("waiting Acquire %d = %p, %v; want ErrClosed", i, r.stream, r.err)
				}
			}
			if r := result(ctx, t, e.acquireAsync(ctx)); !errors.Is(r.err, upstream.ErrClosed) {
				t.Errorf("Acquire after Close = %p, %v; want ErrClosed", r.stream, r.err)
			}
			released(ctx, t, e.src)
			if st := e.src.Status(); st.State != metrics.StateIdle {
				t.Errorf("Status().State = %s after Close, want idle", st.State)
			}
			testutil.WaitFor(ctx, t, "the camera connection to close", func() bool { return e.cam.Active() == 0 })
		})
	}
}
