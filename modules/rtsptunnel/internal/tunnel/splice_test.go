package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readRemote reads binary messages from ws until a close frame and returns the
// bytes and the close error.
func readRemote(ctx context.Context, ws *websocket.Conn) ([]byte, error) {
	var buf bytes.Buffer
	for {
		typ, r, err := ws.Reader(ctx)
		if err != nil {
			return buf.Bytes(), err
		}
		if typ != websocket.MessageBinary {
			return buf.Bytes(), errors.New("text message")
		}
		if _, err := io.Copy(&buf, r); err != nil {
			return buf.Bytes(), err
		}
	}
}

// TestSpliceIntegrity sends large random payloads both ways at once, in odd
// chunk and message sizes (up to 3 MiB messages), and checks every byte.
func TestSpliceIntegrity(t *testing.T) {
	for _, tc := range []struct {
		name string
		tcp  bool
	}{{"pipe", false}, {"tcp", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testutil.Context(t, 30*time.Second)
			const n = 6 << 20
			up, down := randomBytes(n, 1), randomBytes(n, 2)
			client, server, _ := wsPipe(t)
			var camera, peer net.Conn
			if tc.tcp {
				camera, peer = tcpPipe(t)
			} else {
				camera, peer = net.Pipe()
			}
			stats := new(Stats)
			var toRemoteTotal, toCameraTotal atomicCounter
			// CloseTimeout well above the default 3 s: the close frame
			// queues behind megabytes the remote is still reading, which
			// under -race on a loaded 2-core machine can take seconds.
			done := startSplice(ctx, camera, client, SpliceOptions{Stats: stats, ToRemoteTotal: &toRemoteTotal, ToCameraTotal: &toCameraTotal, PingInterval: 50 * time.Millisecond, CloseTimeout: 20 * time.Second})

			var wg sync.WaitGroup
			var gotAtRemote []byte
			var remoteErr error
			wg.Go(func() { gotAtRemote, remoteErr = readRemote(ctx, server) })
			wg.Go(func() { // the remote sends messages of odd sizes, one over 1 MiB
				r := rand.New(rand.NewPCG(3, 3))
				for off := 0; off < n; {
					size := min(1+r.IntN(70000), n-off)
					if off == 0 {
						size = 3 << 20
					}
					if err := server.Write(ctx, websocket.MessageBinary, down[off:off+size]); err != nil {
						t.Errorf("remote write: %v", err)
						return
					}
					off += size
				}
			})
			var gotAtCamera []byte
			readDone := make(chan struct{})
			go func() {
				defer close(readDone)
				gotAtCamera = make([]byte, n)
				if _, err := io.ReadFull(peer, gotAtCamera); err != nil {
					t.Errorf("camera read: %v", err)
				}
			}()
			r := rand.New(rand.NewPCG(4, 4))
			for off := 0; off < n; {
				size := min(1+r.IntN(50000), n-off)
				if _, err := peer.Write(up[off : off+size]); err != nil {
					t.Fatalf("camera write: %v", err)
				}
				off += size
			}
			<-readDone
			// The camera may hold the last bytes before the splice's Write
			// returns and counts them: wait for the count, not a moment.
			for stats.ToCamera() != n && ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
			if stats.ToRemote() > n || stats.ToCamera() != n {
				t.Errorf("live stats: to remote %d, to camera %d", stats.ToRemote(), stats.ToCamera())
			}
			peer.Close() // camera EOF ends the tunnel with 1000
			res := awaitResult(t, ctx, done)
			wg.Wait()

			if websocket.CloseStatus(remoteErr) != websocket.StatusNormalClosure {
				t.Errorf("remote saw %v, want close 1000", remoteErr)
			}
			if sha256.Sum256(gotAtRemote) != sha256.Sum256(up) {
				t.Errorf("camera→remote corrupted: got %d bytes, want %d", len(gotAtRemote), n)
			}
			if sha256.Sum256(gotAtCamera) != sha256.Sum256(down) {
				t.Errorf("remote→camera corrupted")
			}
			if res.Reason != ReasonCameraClosed || res.CloseCode != websocket.StatusNormalClosure || res.Err != nil {
				t.Errorf("result = %+v", res)
			}
			if res.ToRemote != n || res.ToCamera != n || toRemoteTotal.Load() != n || toCameraTotal.Load() != n {
				t.Errorf("counts: %+v, totals %d %d", res, toRemoteTotal.Load(), toCameraTotal.Load())
			}
		})
	}
}

type atomicCounter struct{ atomic.Int64 }

func (c *atomicCounter) Add(v float64) { c.Int64.Add(int64(v)) }

// TestSpliceEnds checks every way a tunnel ends: its Result, what the remote
// sees, and that the camera is closed.
func TestSpliceEnds(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       SpliceOptions
		act        func(ctx context.Context, cancel context.CancelFunc, peer net.Conn, server *websocket.Conn)
		wantReason Reason
		wantCode   websocket.StatusCode // the code in Result
		remoteCode websocket.StatusCode // the close code the remote reads; -1 none expected
	}{
		{
			name:       "camera EOF",
			act:        func(_ context.Context, _ context.CancelFunc, peer net.Conn, _ *websocket.Conn) { peer.Close() },
			wantReason: ReasonCameraClosed, wantCode: 1000, remoteCode: 1000,
		},
		{
			name: "camera reset",
			act: func(_ context.Context, _ context.CancelFunc, peer net.Conn, _ *websocket.Conn) {
				peer.(*net.TCPConn).SetLinger(0) // close with RST
				peer.Close()
			},
			wantReason: ReasonCameraError, wantCode: 1011, remoteCode: 1011,
		},
		{
			name: "remote closes",
			act: func(_ context.Context, _ context.CancelFunc, _ net.Conn, server *websocket.Conn) {
				server.Close(4000, "bye")
			},
			wantReason: ReasonRemoteClosed, wantCode: 4000, remoteCode: -1,
		},
		{
			name: "remote sends text",
			act: func(ctx context.Context, _ context.CancelFunc, _ net.Conn, server *websocket.Conn) {
				server.Write(ctx, websocket.MessageText, []byte("hello"))
			},
			wantReason: ReasonRemoteError, wantCode: 1003, remoteCode: 1003,
		},
		{
			name:       "idle",
			opts:       SpliceOptions{IdleTimeout: 150 * time.Millisecond},
			act:        func(context.Context, context.CancelFunc, net.Conn, *websocket.Conn) {},
			wantReason: ReasonIdle, wantCode: 1000, remoteCode: 1000,
		},
		{
			name:       "max duration",
			opts:       SpliceOptions{MaxDuration: 150 * time.Millisecond},
			act:        func(context.Context, context.CancelFunc, net.Conn, *websocket.Conn) {},
			wantReason: ReasonMaxDuration, wantCode: 1000, remoteCode: 1000,
		},
		{
			name:       "shutdown",
			act:        func(_ context.Context, cancel context.CancelFunc, _ net.Conn, _ *websocket.Conn) { cancel() },
			wantReason: ReasonShutdown, wantCode: 1001, remoteCode: 1001,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testutil.Context(t, 10*time.Second)
			spliceCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			client, server, _ := wsPipe(t)
			camera, peer := tcpPipe(t)
			remote := make(chan error, 1)
			go func() {
				_, err := readRemote(ctx, server)
				remote <- err
			}()
			cameraEOF := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, peer)
				cameraEOF <- err
			}()
			done := startSplice(spliceCtx, camera, client, tc.opts)
			tc.act(ctx, cancel, peer, server)
			res := awaitResult(t, ctx, done)
			if res.Reason != tc.wantReason || res.CloseCode != tc.wantCode {
				t.Errorf("result = %+v, want reason %s code %d", res, tc.wantReason, tc.wantCode)
			}
			if (res.Err != nil) != (tc.wantReason == ReasonCameraError || tc.wantReason == ReasonRemoteError) {
				t.Errorf("result error = %v", res.Err)
			}
			err := <-remote
			if tc.remoteCode != -1 && websocket.CloseStatus(err) != tc.remoteCode {
				t.Errorf("remote read %v, want close %d", err, tc.remoteCode)
			}
			select {
			case <-cameraEOF: // the camera connection was closed
			case <-ctx.Done():
				t.Error("camera connection left open")
			}
		})
	}
}

// TestSpliceCloseWithPingInFlight ends a tunnel while a ping is stuck
// writing to a remote that is not reading (net.Pipe has no buffer): the close
// frame must still reach the remote once it reads again. Cancelling the ping
// would make coder/websocket close the connection under the handshake (the
// remote read EOF; a full CI run caught it in TestSpliceIntegrity).
func TestSpliceCloseWithPingInFlight(t *testing.T) {
	ctx := testutil.Context(t, 20*time.Second)
	client, server, _ := wsPipe(t)
	camera, peer := net.Pipe()
	done := startSplice(ctx, camera, client, SpliceOptions{PingInterval: 5 * time.Millisecond, PingTimeout: 10 * time.Second})
	// The remote reads nothing yet, so the first ping blocks in its write.
	// Should the machine be too slow for a ping to start in this time, the
	// test passes without checking anything; it can never fail falsely.
	time.Sleep(200 * time.Millisecond)
	peer.Close() // camera EOF: close with 1000
	_, err := readRemote(ctx, server)
	if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("remote read %v, want close 1000", err)
	}
	if res := awaitResult(t, ctx, done); res.Reason != ReasonCameraClosed || res.CloseCode != websocket.StatusNormalClosure {
		t.Errorf("result = %+v", res)
	}
}

// TestSpliceIdleActivity checks that traffic in either direction keeps a tunnel alive.
func TestSpliceIdleActivity(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	client, server, _ := wsPipe(t)
	camera, peer := net.Pipe()
	go io.Copy(io.Discard, peer)
	remote := make(chan error, 1)
	go func() { _, err := readRemote(ctx, server); remote <- err }()
	// Generous margins: traffic every 100 ms against a 3 s idle timeout,
	// for longer than the timeout (so that only activity can have kept the
	// tunnel open), and only a stall of the whole machine over 2.9 s could
	// end it early (the suite runs on loaded 2-core machines).
	const idle = 3 * time.Second
	done := startSplice(ctx, camera, client, SpliceOptions{IdleTimeout: idle})
	start := time.Now()
	for i := range 36 { // 3.6 s of alternating traffic, a byte every 100 ms
		time.Sleep(100 * time.Millisecond)
		if i%2 == 0 {
			peer.Write([]byte{1})
		} else {
			server.Write(ctx, websocket.MessageBinary, []byte{2})
		}
	}
	select {
	case r := <-done:
		t.Fatalf("tunnel with traffic ended after %v: %+v", time.Since(start), r)
	default:
	}
	res := awaitResult(t, ctx, done) // now quiet: idle ends it
	if res.Reason != ReasonIdle || res.ToRemote != 18 || res.ToCamera != 18 {
		t.Errorf("result = %+v", res)
	}
	<-remote
}

// TestSpliceDeadPeer: a remote that accepts bytes but never answers pings is
// detected by the configured PingTimeout, without a close handshake.
func TestSpliceDeadPeer(t *testing.T) {
	ctx := testutil.Context(t, 90*time.Second)
	client, _, raw := wsPipe(t)
	go io.Copy(io.Discard, raw) // swallows pings: never a pong
	camera, peer := net.Pipe()
	defer peer.Close()
	go io.Copy(io.Discard, peer)
	start := time.Now()
	// CloseTimeout 60 s: a dead peer that waited for a close handshake
	// would take a minute. The configured PingTimeout (not the 10 s default)
	// is proven by the error text, which names it; the wall clock only
	// tells a prompt verdict (~200 ms) from the 60 s slow path, with a 20 s
	// bound no loaded machine reaches.
	res := awaitResult(t, ctx, startSplice(ctx, camera, client, SpliceOptions{
		PingInterval: 100 * time.Millisecond, PingTimeout: 100 * time.Millisecond, CloseTimeout: time.Minute}))
	if res.Reason != ReasonDeadPeer || res.CloseCode != -1 || !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Errorf("result = %+v", res)
	}
	if res.Err == nil || !strings.Contains(res.Err.Error(), "no pong within 100ms") {
		t.Errorf("error %v does not name the configured ping timeout", res.Err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("dead peer detected after %v", d)
	}
}

// TestSplicePingsKeepLiveRemote: a responsive remote survives many pings.
// The tunnel runs a second longer than PingTimeout, so a client that never
// saw a pong would have ended it as a dead peer; a live remote would have to
// be starved for the whole 2 s PingTimeout to be taken for dead, which no
// loaded machine does.
func TestSplicePingsKeepLiveRemote(t *testing.T) {
	ctx := testutil.Context(t, 30*time.Second)
	client, server, _ := wsPipe(t)
	go readRemote(ctx, server) // reading answers pings
	camera, peer := net.Pipe()
	done := startSplice(ctx, camera, client, SpliceOptions{PingInterval: 20 * time.Millisecond, PingTimeout: 2 * time.Second})
	time.Sleep(3 * time.Second)
	peer.Close()
	if res := awaitResult(t, ctx, done); res.Reason != ReasonCameraClosed {
		t.Errorf("result = %+v", res)
	}
}

// TestSpliceBackpressure: a remote that stops reading stalls only its own
// tunnel: the camera's writes block after a bounded number of bytes, memory does
// not grow, and another tunnel keeps full speed. Shutdown still ends the stalled
// tunnel within its close timeout.
func TestSpliceBackpressure(t *testing.T) {
	ctx := testutil.Context(t, 90*time.Second)

	// Tunnel A: remote never reads.
	clientA, _, _ := wsPipe(t)
	cameraA, peerA := net.Pipe()
	ctxA, shutdownA := context.WithCancel(ctx)
	defer shutdownA()
	doneA := startSplice(ctxA, cameraA, clientA, SpliceOptions{CloseTimeout: 200 * time.Millisecond})
	written, writerDone := floodCamera(peerA)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	stalledAt := waitStalled(t, ctx, written)
	if stalledAt > 1<<20 {
		t.Errorf("camera wrote %d bytes into a stalled tunnel; want a bound near one buffer", stalledAt)
	}

	// Tunnel B carries 8 MiB while A is stalled.
	clientB, serverB, _ := wsPipe(t)
	cameraB, peerB := net.Pipe()
	doneB := startSplice(ctx, cameraB, clientB, SpliceOptions{})
	payload := randomBytes(8<<20, 9)
	got := make(chan []byte, 1)
	go func() { b, _ := readRemote(ctx, serverB); got <- b }()
	go func() { peerB.Write(payload); peerB.Close() }()
	if b := <-got; !bytes.Equal(b, payload) {
		t.Errorf("tunnel B delivered %d of %d bytes", len(b), len(payload))
	}
	if res := awaitResult(t, ctx, doneB); res.Reason != ReasonCameraClosed {
		t.Errorf("tunnel B result = %+v", res)
	}

	if w := written.Load(); w != stalledAt {
		t.Errorf("stalled tunnel moved on: %d → %d bytes", stalledAt, w)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if growth := int64(after.HeapInuse) - int64(before.HeapInuse); growth > 4<<20 {
		t.Errorf("heap grew by %d bytes while a tunnel was stalled", growth)
	}

	start := time.Now()
	shutdownA()
	res := awaitResult(t, ctx, doneA)
	if res.Reason != ReasonShutdown {
		t.Errorf("tunnel A result = %+v", res)
	}
	// Without the abort after CloseTimeout the close handshake would wait
	// forever (the remote never reads): the test's 90 s context would end
	// it. 20 s tells the two apart on any machine; that the abort is what
	// ended it is asserted by TestSpliceAbortStalledRemote.
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("stalled tunnel took %v to shut down", d)
	}
	<-writerDone
}

// TestSpliceAbortStalledRemote: the data path has no cancellable context, so
// a close handshake held up by a write to a remote that stopped reading must
// end through Conn.Abort, whatever ended the tunnel.
func TestSpliceAbortStalledRemote(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, shutdown context.CancelFunc, server *websocket.Conn)
		want Reason
	}{
		{"shutdown", func(t *testing.T, shutdown context.CancelFunc, _ *websocket.Conn) { shutdown() }, ReasonShutdown},
		{"text message", func(t *testing.T, _ context.CancelFunc, server *websocket.Conn) {
			// The remote writes but never reads: the module's reader
			// takes the message and ends the tunnel, its writer stays stuck.
			if err := server.Write(t.Context(), websocket.MessageText, []byte("hi")); err != nil {
				t.Fatal(err)
			}
		}, ReasonRemoteError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testutil.Context(t, 90*time.Second)
			ws, server, _, clientRaw := wsPipeConns(t)
			var aborted atomic.Bool
			client := pipeConn(ws, closeSpy{clientRaw, &aborted})
			camera, peer := net.Pipe()
			spliceCtx, shutdown := context.WithCancel(ctx)
			defer shutdown()
			done := startSplice(spliceCtx, camera, client, SpliceOptions{CloseTimeout: 200 * time.Millisecond})
			written, _ := floodCamera(peer)
			waitStalled(t, ctx, written)
			start := time.Now()
			tc.end(t, shutdown, server)
			res := awaitResult(t, ctx, done)
			if res.Reason != tc.want {
				t.Errorf("result = %+v, want reason %s", res, tc.want)
			}
			if !aborted.Load() {
				t.Error("Abort was not called")
			}
			// Abort is the only way out (the remote never reads again):
			// without it the tunnel would last until the test's 90 s
			// context, far beyond this 20 s bound; the spy above shows
			// Abort did it.
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("stalled tunnel took %v to end", d)
			}
		})
	}
}

// closeSpy is a connection that records that it was closed.
type closeSpy struct {
	net.Conn
	closed *atomic.Bool
}

func (c closeSpy) Close() error { c.closed.Store(true); return c.Conn.Close() }

// writeCounter is a camera connection that records the size of every write.
type writeCounter struct {
	net.Conn
	mu    sync.Mutex
	sizes []int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.sizes = append(w.sizes, len(p))
	w.mu.Unlock()
	return w.Conn.Write(p)
}

// TestSpliceMessageOneCameraWrite checks that a message reaches the camera in
// as few writes as the copy buffer allows, not one per read of the websocket
// (crypto/tls returns a record, at most 16 KiB, per read).
func TestSpliceMessageOneCameraWrite(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	client, server, _ := wsPipe(t)
	a, peer := tcpPipe(t)
	camera := &writeCounter{Conn: a}
	done := startSplice(ctx, camera, client, SpliceOptions{})
	// Messages of 1 byte, exactly the buffer, and 2.5 buffers.
	sizes := []int{1, bufSize, bufSize*2 + bufSize/2}
	var want []int
	for i, size := range sizes {
		msg := randomBytes(size, uint64(i))
		if err := server.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, size)
		if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: camera got %d bytes (%v), corrupted or short", i, len(got), err)
		}
		for size > 0 {
			want = append(want, min(size, bufSize))
			size -= bufSize
		}
	}
	camera.mu.Lock()
	got := slices.Clone(camera.sizes)
	camera.mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("camera writes %v, want %v (one per full buffer or message end)", got, want)
	}
	go server.Read(ctx) // answers the close frame
	peer.Close()
	awaitResult(t, ctx, done)
}
