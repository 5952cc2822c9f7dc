package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Reason says why a tunnel ended. The set is fixed (bounded metric label).
type Reason string

// The reasons a Splice ends; see the package documentation for close codes.
const (
	ReasonCameraClosed Reason = "camera_closed" // the camera closed its connection (EOF); sent 1000
	ReasonCameraError  Reason = "camera_error"  // reading from or writing to the camera failed; sent 1011
	ReasonRemoteClosed Reason = "remote_closed" // the remote sent a close frame (Result.CloseCode)
	ReasonRemoteError  Reason = "remote_error"  // the websocket failed without a close frame, or the remote broke the protocol
	ReasonIdle         Reason = "idle"          // no bytes either way for IdleTimeout; sent 1000
	ReasonMaxDuration  Reason = "max_duration"  // MaxDuration elapsed; sent 1000
	ReasonDeadPeer     Reason = "dead_peer"     // a ping went unanswered for PingTimeout; no close handshake
	ReasonShutdown     Reason = "shutdown"      // Splice's ctx was cancelled; sent 1001
)

// Reasons lists every Reason, e.g. to initialise metric label values.
var Reasons = []Reason{ReasonCameraClosed, ReasonCameraError, ReasonRemoteClosed, ReasonRemoteError,
	ReasonIdle, ReasonMaxDuration, ReasonDeadPeer, ReasonShutdown}

// Counter receives byte counts; a prometheus.Counter satisfies it.
type Counter interface{ Add(float64) }

// Stats counts the bytes a Splice delivered, per direction. The zero value is
// ready; its methods are safe to call while Splice runs.
type Stats struct {
	toRemote, toCamera atomic.Int64
}

// ToRemote returns the bytes read from the camera and written to the websocket so far.
func (s *Stats) ToRemote() int64 { return s.toRemote.Load() }

// ToCamera returns the bytes read from the websocket and written to the camera so far.
func (s *Stats) ToCamera() int64 { return s.toCamera.Load() }

// SpliceOptions configures Splice. The zero value means no pings, no idle
// timeout and no duration limit.
type SpliceOptions struct {
	// PingInterval is the interval between websocket pings; 0 disables them.
	PingInterval time.Duration
	// PingTimeout is how long a ping may go unanswered before the remote is a
	// dead peer. Zero means 10s. A remote that stops reading for this long
	// counts as dead too: its pong queues behind our data.
	PingTimeout time.Duration
	// IdleTimeout ends the tunnel when no bytes flowed either way for this
	// long (pings do not count); 0 disables it.
	IdleTimeout time.Duration
	// MaxDuration ends the tunnel after this long; 0 means unlimited.
	MaxDuration time.Duration
	// CloseTimeout is how long the close handshake may wait for blocked
	// reads and writes before they are aborted; see Splice. Zero means 3s.
	CloseTimeout time.Duration

	// Stats, when set, is updated as bytes are delivered.
	Stats *Stats
	// ToRemoteTotal and ToCameraTotal, when set, also receive every delivered
	// byte count (for process-wide counters).
	ToRemoteTotal, ToCameraTotal Counter
}

// Result tells how a Splice ended.
type Result struct {
	Reason Reason
	// CloseCode is the code the remote sent when Reason is ReasonRemoteClosed,
	// otherwise the code the module sent; -1 when no close frame was exchanged.
	CloseCode websocket.StatusCode
	// Err is the failure behind ReasonCameraError, ReasonRemoteError and
	// ReasonDeadPeer; nil otherwise.
	Err error
	// ToRemote and ToCamera are the bytes delivered in each direction.
	ToRemote, ToCamera int64
	// Duration is how long Splice ran.
	Duration time.Duration
}

// bufSize is the copy buffer per direction: large enough to carry a burst of
// video in one websocket message, small enough for many tunnels.
const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// errTextMessage is the protocol error of a remote that sends text.
var errTextMessage = errors.New("remote sent a text message; the tunnel carries binary messages only")

// Splice copies bytes between camera and ws until either side closes, a
// timeout fires or ctx is cancelled (shutdown: close code 1001), and reports
// why it ended.
//
// Splice takes ownership of camera and ws: both are closed when it returns.
// It blocks for the life of the tunnel and returns only after every goroutine
// it started has exited. It runs one reader and one writer per direction and
// never queues: a stalled peer stalls the opposite side through TCP
// backpressure.
//
// The close handshake is bounded: reads and writes still blocked after
// opts.CloseTimeout are aborted with ws.Abort, which closes the connection
// at once.
//
// The websocket's reads and writes get no cancellable context: coder/websocket
// registers a cancellation (context.AfterFunc) with each read and write whose
// context has one, which cost about 4% of the module's CPU at 1000 streams.
// ws.Abort is the only way they are interrupted.
func Splice(ctx context.Context, camera net.Conn, ws *Conn, opts SpliceOptions) Result {
	s := &splice{camera: camera, ws: ws, opts: opts, start: time.Now()}
	if s.opts.Stats == nil {
		s.opts.Stats = new(Stats)
	}
	if s.opts.PingTimeout <= 0 {
		s.opts.PingTimeout = 10 * time.Second
	}
	if s.opts.CloseTimeout <= 0 {
		s.opts.CloseTimeout = 3 * time.Second
	}
	ws.SetReadLimit(-1) // messages are streamed, never buffered whole

	// Not derived from ctx: on shutdown the tunnel closes gracefully.
	stopPing := make(chan struct{})

	// Each goroutine sends at most one event; the buffer lets all of them
	// finish without a receiver.
	events := make(chan event, 3)
	var wg sync.WaitGroup
	wg.Go(func() { events <- s.cameraToRemote() })
	wg.Go(func() { events <- s.remoteToCamera() })
	if s.opts.PingInterval > 0 {
		wg.Go(func() {
			if ev, dead := s.pingLoop(stopPing); dead {
				events <- ev
			}
		})
	}

	first := s.wait(ctx, events)
	close(stopPing)
	res := s.close(first)
	wg.Wait()
	res.ToRemote = s.opts.Stats.ToRemote()
	res.ToCamera = s.opts.Stats.ToCamera()
	res.Duration = time.Since(s.start)
	return res
}

// splice is the state of one Splice call. Fields are static after
// construction except lastActive, which both copy goroutines update.
type splice struct {
	camera     net.Conn
	ws         *Conn
	opts       SpliceOptions
	start      time.Time
	lastActive atomic.Int64 // nanoseconds since start of the last byte moved
}

// event is the first thing that ended a tunnel.
type event struct {
	reason Reason
	code   websocket.StatusCode // received close code (remote_closed), or code to send (0: default)
	err    error
}

func (s *splice) touch() { s.lastActive.Store(int64(time.Since(s.start))) }

// wait returns the first event: a goroutine finished, ctx ended, or a timer fired.
func (s *splice) wait(ctx context.Context, events <-chan event) event {
	var maxC, idleC <-chan time.Time
	if s.opts.MaxDuration > 0 {
		t := time.NewTimer(s.opts.MaxDuration)
		defer t.Stop()
		maxC = t.C
	}
	var idle *time.Timer
	if s.opts.IdleTimeout > 0 {
		idle = time.NewTimer(s.opts.IdleTimeout)
		defer idle.Stop()
		idleC = idle.C
	}
	for {
		select {
		case ev := <-events:
			return ev
		case <-ctx.Done():
			return event{reason: ReasonShutdown}
		case <-maxC:
			return event{reason: ReasonMaxDuration}
		case <-idleC:
			// The copy goroutines only record activity; the timer is
			// re-armed here for the remaining quiet time.
			quiet := time.Since(s.start) - time.Duration(s.lastActive.Load())
			if quiet >= s.opts.IdleTimeout {
				return event{reason: ReasonIdle}
			}
			idle.Reset(s.opts.IdleTimeout - quiet)
		}
	}
}

// cameraToRemote is the only reader of camera and the only data writer of ws.
func (s *splice) cameraToRemote() event {
	read := poolReader(s.camera)
	for {
		bp, n, err := read()
		if n > 0 {
			s.touch()
			werr := s.ws.Write(context.Background(), websocket.MessageBinary, (*bp)[:n])
			if werr != nil {
				bufPool.Put(bp)
				return remoteEvent(fmt.Errorf("failed to write to websocket: %w", werr))
			}
			s.opts.Stats.toRemote.Add(int64(n))
			if s.opts.ToRemoteTotal != nil {
				s.opts.ToRemoteTotal.Add(float64(n))
			}
		}
		if bp != nil {
			bufPool.Put(bp)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return event{reason: ReasonCameraClosed}
			}
			return event{reason: ReasonCameraError, err: fmt.Errorf("failed to read from camera: %w", err)}
		}
	}
}

// remoteToCamera is the only reader of ws and the only writer of camera. It
// holds a copy buffer only while a message is being copied.
func (s *splice) remoteToCamera() event {
	for {
		typ, r, err := s.ws.Reader(context.Background())
		if err != nil {
			return remoteEvent(fmt.Errorf("failed to read from websocket: %w", err))
		}
		if typ != websocket.MessageBinary {
			return event{reason: ReasonRemoteError, code: websocket.StatusUnsupportedData, err: errTextMessage}
		}
		if ev, ok := s.copyMessage(r); !ok {
			return ev
		}
	}
}

// copyMessage copies one websocket message to the camera. It returns ok at
// the end of the message, otherwise the event that ends the tunnel.
//
// It writes to the camera when the buffer is full or the message has ended,
// not after every read: crypto/tls returns one record (16 KiB at most) per
// read, and a loopback profile showed a 16 KiB write costing about 1.6 times
// the CPU per byte of a 32 KiB one. Waiting for the rest of a message delays
// nothing: a sender writes a message whole, as the relay and the original
// service send one per read of the player's connection.
func (s *splice) copyMessage(r io.Reader) (ev event, ok bool) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := readFull(r, buf)
		if n > 0 {
			s.touch()
			if _, werr := s.camera.Write(buf[:n]); werr != nil {
				return event{reason: ReasonCameraError, err: fmt.Errorf("failed to write to camera: %w", werr)}, false
			}
			s.opts.Stats.toCamera.Add(int64(n))
			if s.opts.ToCameraTotal != nil {
				s.opts.ToCameraTotal.Add(float64(n))
			}
		}
		if errors.Is(err, io.EOF) {
			return event{}, true // end of this message
		}
		if err != nil {
			return remoteEvent(fmt.Errorf("failed to read from websocket: %w", err)), false
		}
	}
}

// readFull reads from r until buf is full or r returns an error (io.EOF at
// the end of a message), and returns the bytes read with that error.
func readFull(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// remoteEvent classifies a websocket error: a close frame from the remote, or a failure.
func remoteEvent(err error) event {
	if code := websocket.CloseStatus(err); code != -1 {
		return event{reason: ReasonRemoteClosed, code: code}
	}
	return event{reason: ReasonRemoteError, err: err}
}

// pingLoop pings every PingInterval and reports a dead peer when a pong does
// not arrive within PingTimeout. It returns dead=false when stop is closed or
// the connection fails otherwise (the copy goroutines report that).
//
// Closing stop never cancels a ping in flight: coder/websocket closes the
// connection when the context of a frame write ends, so cancelling a ping
// still queued behind data would cut the close handshake that follows (the
// remote would read EOF instead of the close frame). A ping in flight ends
// with its pong, its timeout, or the websocket's close.
func (s *splice) pingLoop(stop <-chan struct{}) (ev event, dead bool) {
	t := time.NewTicker(s.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return event{}, false
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(context.Background(), s.opts.PingTimeout)
		err := s.ws.Ping(pctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				select {
				case <-stop: // the tunnel is closing; not a verdict on the peer
					return event{}, false
				default:
				}
				return event{reason: ReasonDeadPeer, err: fmt.Errorf("no pong within %v: %w", s.opts.PingTimeout, err)}, true
			}
			return event{}, false
		}
	}
}

// close ends both connections after first and returns the result without byte counts.
func (s *splice) close(first event) Result {
	res := Result{Reason: first.reason, Err: first.err, CloseCode: -1}
	// Closing the camera first unblocks a copy goroutine stuck writing to it,
	// so that the websocket's reader is free to take the close handshake.
	_ = s.camera.Close()

	var code websocket.StatusCode
	var text string
	switch first.reason {
	case ReasonRemoteClosed:
		res.CloseCode = first.code // the library has answered and closed
	case ReasonRemoteError:
		if first.code != 0 {
			code, text = first.code, "binary messages only"
		}
	case ReasonDeadPeer:
		// No handshake with a peer that does not answer.
	case ReasonCameraClosed:
		code, text = websocket.StatusNormalClosure, "camera closed the connection"
	case ReasonCameraError:
		code, text = websocket.StatusInternalError, "camera connection failed"
	case ReasonIdle:
		code, text = websocket.StatusNormalClosure, "idle timeout"
	case ReasonMaxDuration:
		code, text = websocket.StatusNormalClosure, "maximum session duration reached"
	case ReasonShutdown:
		code, text = websocket.StatusGoingAway, "module shutting down"
	}
	if code == 0 {
		s.ws.Abort()
		_ = s.ws.CloseNow()
		return res
	}
	res.CloseCode = code
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.ws.Close(code, text)
	}()
	t := time.NewTimer(s.opts.CloseTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		// A blocked data write or read holds the connection: aborting it
		// closes it underneath, which also ends Close.
		s.ws.Abort()
		<-done
	}
	return res
}
