package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/token"
)

// session is one tunnel's rendezvous: the module's websocket attaches to it.
type session struct {
	id     string
	camera string

	attached chan struct{} // closed by attach; module or moduleErr is then set
	done     chan struct{} // closed by end

	mu         sync.Mutex
	module     net.Conn // guarded by mu; set once by attach
	moduleErr  error    // guarded by mu; set once by attach
	isAttached bool     // guarded by mu
	ended      bool     // guarded by mu
}

func newSession(id, camera string) *session {
	return &session{id: id, camera: camera, attached: make(chan struct{}), done: make(chan struct{})}
}

// waiting reports whether the session still waits for its module.
func (s *session) waiting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.ended && !s.isAttached
}

// attach hands the module's conn (or the upgrade's error) to the session.
// It returns false, leaving conn to the caller, when the session has ended
// or already has a module.
func (s *session) attach(conn net.Conn, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.isAttached {
		return false
	}
	s.module, s.moduleErr, s.isAttached = conn, err, true
	close(s.attached)
	return true
}

// end marks the session ended. It returns the attached module conn, which
// the caller must close unless it already owns it.
func (s *session) end() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.ended = true
		close(s.done)
	}
	return s.module
}

// methodResult is the outcome of the session's tunnelOpen call.
type methodResult struct {
	res OpenResult
	err error
}

// DialError is why [Server.Dial] failed. Its Outcome is one of the
// metrics.Outcome* values; Reason is a sentence for logs and players.
type DialError struct {
	Camera  string
	Outcome string
	Reason  string
	// MethodStatus is the module's tunnelOpen status when it answered, or
	// IoT Hub's HTTP status when the hub refused the call; 0 otherwise.
	MethodStatus int
}

func (e *DialError) Error() string {
	return fmt.Sprintf("tunnel to camera %s failed: %s", e.Camera, e.Reason)
}

// CancelCause, given as the cause of the context passed to Dial
// (context.WithCancelCause), names the outcome recorded when the caller
// gives up, e.g. OutcomePlayerGone. Without it the outcome is
// OutcomeCanceled.
type CancelCause struct {
	Outcome string
	Reason  string
}

func (c *CancelCause) Error() string { return c.Reason }

// Dial opens a tunnel to camera: it mints a session with a single-use token,
// calls tunnelOpen through the Opener, and waits until the module's
// websocket is attached (bounded by SessionWait) or the method fails. The
// returned *Tunnel is a net.Conn to the camera's RTSP port that belongs to
// the caller, who must close it; Close on the Server closes it as going
// away. A failure returns a *DialError. Canceling ctx gives up (see
// [CancelCause]).
//
// Every tunnel logs exactly one "session closed" line: at once when Dial
// fails, or when the Tunnel is closed.
func (s *Server) Dial(ctx context.Context, camera string) (*Tunnel, error) {
	start := time.Now()
	fail := func(log *slog.Logger, out string, reason string, m *methodResult) error {
		attrs := []any{"outcome", out, "reason", reason, "duration", time.Since(start).Round(time.Millisecond).String()}
		attrs = append(attrs, methodAttrs(m)...)
		// Counted before it is logged: whoever sees the line (a test, an
		// operator) finds the session in relay_sessions_total too.
		s.Metrics.SessionsTotal.WithLabelValues(camera, out).Inc()
		log.Warn("session closed", attrs...)
		return &DialError{Camera: camera, Outcome: out, Reason: reason, MethodStatus: methodStatus(m)}
	}
	if !s.enter() {
		return nil, fail(s.Logger.With("camera", camera), metrics.OutcomeShutdown, "relay shutting down", nil)
	}
	defer s.wg.Done()

	id, err := token.NewID(nil)
	if err != nil {
		return nil, fail(s.Logger.With("camera", camera), metrics.OutcomeError, err.Error(), nil)
	}
	log := s.Logger.With("session", id, "camera", camera)
	log.Debug("session started")
	sess := newSession(id, camera)

	// Reserve a slot and register the session.
	s.mu.Lock()
	if s.MaxSessionsPerCamera > 0 && s.perCamera[camera] >= s.MaxSessionsPerCamera {
		s.mu.Unlock()
		return nil, fail(log, metrics.OutcomeRejected, fmt.Sprintf("camera has %d sessions already", s.MaxSessionsPerCamera), nil)
	}
	s.perCamera[camera]++
	s.sessions[id] = sess
	s.mu.Unlock()
	s.Metrics.SessionsActive.Inc()
	unregister := func() {
		s.mu.Lock()
		delete(s.sessions, id)
		if s.perCamera[camera]--; s.perCamera[camera] == 0 {
			delete(s.perCamera, camera)
		}
		s.mu.Unlock()
		s.Metrics.SessionsActive.Dec()
	}

	tok, err := s.tokens.Issue(id, s.TokenTTL)
	if err != nil {
		unregister()
		sess.end()
		return nil, fail(log, metrics.OutcomeError, err.Error(), nil)
	}

	// Call tunnelOpen while we wait for the module's websocket: the module
	// dials before it answers. The call outlives a successful Dial (the
	// answer may come after the websocket); it is canceled when the tunnel
	// closes.
	methodCtx, cancelMethod := context.WithCancel(context.WithoutCancel(ctx))
	methodCh := make(chan methodResult, 1)
	go func() {
		res, err := s.open(methodCtx, log, camera, OpenRequest{
			SessionID: id,
			Endpoint:  s.BaseURL.JoinPath("tunnels", id).String(),
			Token:     tok,
		}, start)
		methodCh <- methodResult{res, err}
	}()
	var method *methodResult
	// failed cleans up a session that ends before a Tunnel exists.
	failed := func(out, reason string) error {
		s.tokens.Revoke(id)
		unregister()
		if m := sess.end(); m != nil {
			m.Close() // attached after the session failed
		}
		if method == nil {
			// The session ended without needing the answer: cancel and wait
			// so no goroutine leaks, but keep an answer that is there.
			select {
			case r := <-methodCh:
				method = &r
			default:
				cancelMethod()
				r := <-methodCh
				if r.err == nil || !errors.Is(r.err, context.Canceled) {
					method = &r
				}
			}
		}
		cancelMethod()
		return fail(log, out, reason, method)
	}

	// attached turns the attached module connection into a Tunnel.
	attached := func() (*Tunnel, error) {
		sess.mu.Lock()
		module, uerr := sess.module, sess.moduleErr
		sess.mu.Unlock()
		if uerr != nil {
			return nil, failed(metrics.OutcomeError, "module websocket upgrade failed: "+uerr.Error())
		}
		openDur := time.Since(start)
		s.Metrics.OpenDuration.Observe(openDur.Seconds())
		log.Info("session opened", "open_duration", openDur.Round(time.Millisecond).String(), "module", module.RemoteAddr().String())
		t := &Tunnel{
			Conn: module, s: s, sess: sess, log: log, start: start,
			unregister: unregister, cancelMethod: cancelMethod,
			toCamera:   s.Metrics.EdgeBytes.WithLabelValues(camera, metrics.DirToCamera),
			fromCamera: s.Metrics.EdgeBytes.WithLabelValues(camera, metrics.DirFromCamera),
			methodDone: make(chan struct{}),
		}
		if method != nil {
			t.method = method
			close(t.methodDone)
		} else {
			go t.collectMethod(methodCh)
		}
		t.stopWatch = context.AfterFunc(s.ctx, func() { t.End("relay shutting down", true) })
		return t, nil
	}

	timer := time.NewTimer(s.SessionWait)
	defer timer.Stop()
	for {
		select {
		case <-sess.attached:
			return attached()

		case r := <-methodCh:
			method = &r
			select {
			case <-sess.attached: // the module attached before it answered
				return attached()
			default:
			}
			if r.err != nil {
				return nil, failed(metrics.OutcomeMethodError, "tunnelOpen did not reach the module")
			}
			if r.res.Status != 200 {
				// The module's message says why (behind a proxy: 407, 403, an
				// unreachable proxy, a TLS interception); log it and count it.
				cause, text := moduleCause(r.res.Status, r.res.Body)
				s.Metrics.ModuleOpenFailures.WithLabelValues(cause).Inc()
				reason := fmt.Sprintf("module answered tunnelOpen with %d (%s)", r.res.Status, cause)
				if text != "" {
					reason += ": " + text
				}
				return nil, failed(metrics.OutcomeMethodFailed, reason)
			}
			// 200: the websocket is up and being attached; keep waiting.

		case <-timer.C:
			return nil, failed(metrics.OutcomeTimeout, fmt.Sprintf("module did not connect within %v", s.SessionWait))

		case <-ctx.Done():
			var cc *CancelCause
			switch {
			case errors.As(context.Cause(ctx), &cc):
				return nil, failed(cc.Outcome, cc.Reason)
			case s.ctx.Err() != nil:
				return nil, failed(metrics.OutcomeShutdown, "relay shutting down")
			default:
				return nil, failed(metrics.OutcomeCanceled, "caller gave up: "+context.Cause(ctx).Error())
			}

		case <-s.ctx.Done():
			return nil, failed(metrics.OutcomeShutdown, "relay shutting down")
		}
	}
}

// Retries of a tunnelOpen that did not reach the module (see open).
const (
	notOnlineRetryFirst = 50 * time.Millisecond
	notOnlineRetryMax   = 500 * time.Millisecond
)

// open calls the Opener, and calls it again, with a short backoff, while
// IoT Hub answers that the module is not connected or not subscribed to
// methods (404103), for NotOnlineRetry: the module never saw the call, so
// repeating it is safe. That is what edgeHub answers while the module renews
// its token (it unsubscribes from methods on the old connection, then
// connects the new one and subscribes) or reconnects. The retries stop at
// three quarters of SessionWait at the latest, so that the last answer, not
// the timer, ends a session whose module is really offline. Any other
// failure is final: after a 504 or the module's own answer the module may
// have acted.
func (s *Server) open(ctx context.Context, log *slog.Logger, camera string, req OpenRequest, start time.Time) (OpenResult, error) {
	until := start.Add(min(s.NotOnlineRetry, s.SessionWait*3/4))
	wait := notOnlineRetryFirst
	for retries := 0; ; retries++ {
		res, err := s.Opener.OpenTunnel(ctx, camera, req)
		if err == nil || !notOnline(err) || time.Now().Add(wait).After(until) {
			if retries > 0 {
				log.Debug("tunnelOpen retried", "retries", retries, "error", err)
			}
			return res, err
		}
		if retries == 0 {
			log.Info("tunnelOpen: the module is not connected or not subscribed to methods (renewing its token, or reconnecting); retrying", "error", err)
		}
		s.Metrics.MethodRetries.Inc()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return res, err
		}
		wait = min(2*wait, notOnlineRetryMax)
	}
}

// notOnline reports whether err says that the call never reached the
// module because it is not connected or not subscribed to methods (see
// Opener).
func notOnline(err error) bool {
	var e interface{ DeviceNotOnline() bool }
	return errors.As(err, &e) && e.DeviceNotOnline()
}

// Tunnel is an open tunnel: a net.Conn whose reads are the camera's bytes
// and whose writes go to the camera. It counts the bytes each way
// (relay_edge_bytes_total) and logs "session closed" once, when it is
// closed. Read and Write are safe for one concurrent reader and one
// concurrent writer; Close and End are safe to call from any goroutine and
// more than once.
type Tunnel struct {
	net.Conn // the module's websocket; owned by the Tunnel

	s            *Server
	sess         *session
	log          *slog.Logger
	start        time.Time
	unregister   func()
	cancelMethod context.CancelFunc
	stopWatch    func() bool
	toCamera     prometheus.Counter
	fromCamera   prometheus.Counter

	toCameraN   atomic.Int64
	fromCameraN atomic.Int64

	methodDone chan struct{} // closed when method is set
	method     *methodResult // written once before methodDone is closed

	closeOnce sync.Once
	closeErr  error
	endOnce   sync.Once
}

// ID returns the session id (the last segment of the websocket URL).
func (t *Tunnel) ID() string { return t.sess.id }

// Read reads the camera's bytes.
func (t *Tunnel) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	t.countFrom(n)
	return n, err
}

// WriteTo copies the camera's bytes to w; with a module connection from
// wsserver it holds no buffer while it waits (see wsserver.Conn.WriteTo).
func (t *Tunnel) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(&countWriter{w: w, count: t.countFrom}, t.Conn)
}

// Write sends bytes to the camera.
func (t *Tunnel) Write(p []byte) (int, error) {
	n, err := t.Conn.Write(p)
	if n > 0 {
		t.toCameraN.Add(int64(n))
		t.toCamera.Add(float64(n))
	}
	return n, err
}

func (t *Tunnel) countFrom(n int) {
	if n > 0 {
		t.fromCameraN.Add(int64(n))
		t.fromCamera.Add(float64(n))
	}
}

// BytesFromCamera returns the bytes read from the camera so far.
func (t *Tunnel) BytesFromCamera() int64 { return t.fromCameraN.Load() }

// Close ends the tunnel normally (close code 1000).
func (t *Tunnel) Close() error { return t.End("closed by the relay", false) }

// CloseGoingAway ends the tunnel with close code 1001 (the relay is going
// away).
func (t *Tunnel) CloseGoingAway() error { return t.End("relay shutting down", true) }

// End closes the tunnel and logs "session closed" with reason; goingAway
// sends close code 1001 instead of 1000. Only the first call counts.
func (t *Tunnel) End(reason string, goingAway bool) error {
	var err error
	t.endOnce.Do(func() {
		t.stopWatch()
		err = t.closeConn(goingAway)
		t.sess.end()
		t.s.tokens.Revoke(t.sess.id)
		t.unregister()
		// The method's answer normally came long ago; do not wait for a
		// hub that never answers.
		t.cancelMethod()
		<-t.methodDone
		attrs := []any{
			"outcome", metrics.OutcomeOK,
			"reason", reason,
			"duration", time.Since(t.start).Round(time.Millisecond).String(),
			"bytes_to_camera", t.toCameraN.Load(),
			"bytes_to_player", t.fromCameraN.Load(),
		}
		attrs = append(attrs, methodAttrs(t.method)...)
		t.s.Metrics.SessionsTotal.WithLabelValues(t.sess.camera, metrics.OutcomeOK).Inc() // before the log line, as in Dial
		t.log.Info("session closed", attrs...)
	})
	return err
}

// closeConn closes the module connection (once) without ending the
// session, so that a blocked Read or Write returns.
func (t *Tunnel) closeConn(goingAway bool) error {
	t.closeOnce.Do(func() {
		if g, ok := t.Conn.(GoingAwayCloser); ok && goingAway {
			t.closeErr = g.CloseGoingAway()
		} else {
			t.closeErr = t.Conn.Close()
		}
	})
	return t.closeErr
}

func (t *Tunnel) collectMethod(ch <-chan methodResult) {
	r := <-ch
	if r.err == nil || !errors.Is(r.err, context.Canceled) {
		t.method = &r
	}
	close(t.methodDone)
}

// countWriter reports the bytes written through it.
type countWriter struct {
	w     io.Writer
	count func(int)
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.count(n)
	return n, err
}

// methodStatus is the status a DialError reports for m.
func methodStatus(m *methodResult) int {
	if m == nil {
		return 0
	}
	if m.err != nil {
		var hs interface{ HTTPStatus() int }
		if errors.As(m.err, &hs) {
			return hs.HTTPStatus()
		}
		return 0
	}
	return m.res.Status
}
