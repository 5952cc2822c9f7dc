package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/token"
)

// session is one player connection's tunnel.
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

	toCamera atomic.Int64 // bytes player → module
	toPlayer atomic.Int64 // bytes module → player
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

// outcome is how a session ended: a metrics.Outcome* value and a reason.
type outcome struct {
	kind   string
	reason string
}

// HandlePlayer runs one session for a player that connected to camera. It
// blocks until the session ends, and closes player. Canceling ctx (or
// Close) ends the session.
func (s *Server) HandlePlayer(ctx context.Context, camera string, player net.Conn) {
	if !s.enter() {
		player.Close()
		return
	}
	defer s.wg.Done()
	defer player.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	start := time.Now()
	s.Metrics.SessionsActive.Inc()
	defer s.Metrics.SessionsActive.Dec()

	id, err := token.NewID(nil)
	if err != nil {
		s.Logger.Error("session failed", "camera", camera, "outcome", metrics.OutcomeError, "error", err)
		s.Metrics.SessionsTotal.WithLabelValues(camera, metrics.OutcomeError).Inc()
		return
	}
	log := s.Logger.With("session", id, "camera", camera, "player", player.RemoteAddr().String())
	log.Debug("session started")

	sess := newSession(id, camera)
	var method *methodResult
	out := s.run(ctx, log, sess, player, start, &method)

	attrs := []any{
		"outcome", out.kind,
		"reason", out.reason,
		"duration", time.Since(start).Round(time.Millisecond).String(),
		"bytes_to_camera", sess.toCamera.Load(),
		"bytes_to_player", sess.toPlayer.Load(),
	}
	attrs = append(attrs, methodAttrs(method)...)
	level := slog.LevelInfo
	if out.kind != metrics.OutcomeOK {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "session closed", attrs...)
	s.Metrics.SessionsTotal.WithLabelValues(camera, out.kind).Inc()
}

// run is HandlePlayer's body; it returns how the session ended. *method is
// set to the tunnelOpen result if it arrived.
func (s *Server) run(ctx context.Context, log *slog.Logger, sess *session, player net.Conn, start time.Time, method **methodResult) outcome {
	pre := startPrefetch(player, prefetchLimit)
	defer pre.stop() // idempotent; the splice stops it earlier

	// Reserve a slot and register the session.
	s.mu.Lock()
	if s.MaxSessionsPerCamera > 0 && s.perCamera[sess.camera] >= s.MaxSessionsPerCamera {
		s.mu.Unlock()
		s.reject(log, pre, player)
		return outcome{metrics.OutcomeRejected, fmt.Sprintf("camera has %d sessions already", s.MaxSessionsPerCamera)}
	}
	s.perCamera[sess.camera]++
	s.sessions[sess.id] = sess
	s.mu.Unlock()
	spliced := false // once true, the splice owns and closes the module conn
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess.id)
		if s.perCamera[sess.camera]--; s.perCamera[sess.camera] == 0 {
			delete(s.perCamera, sess.camera)
		}
		s.mu.Unlock()
		if m := sess.end(); m != nil && !spliced {
			m.Close() // attached after the session failed
		}
	}()

	tok, err := s.tokens.Issue(sess.id, s.TokenTTL)
	if err != nil {
		s.reject(log, pre, player)
		return outcome{metrics.OutcomeError, err.Error()}
	}
	defer s.tokens.Revoke(sess.id)

	// Call tunnelOpen while we wait for the module's websocket: the module
	// dials before it answers.
	methodCtx, cancelMethod := context.WithCancel(ctx)
	methodCh := make(chan methodResult, 1)
	go func() {
		res, err := s.Opener.OpenTunnel(methodCtx, sess.camera, OpenRequest{
			SessionID: sess.id,
			Endpoint:  s.BaseURL.JoinPath("tunnels", sess.id).String(),
			Token:     tok,
		})
		methodCh <- methodResult{res, err}
	}()
	defer func() {
		if methodCh == nil { // already received
			cancelMethod()
			return
		}
		// Keep a result that is already there; otherwise the session has
		// ended without needing it: cancel and wait so no goroutine leaks.
		select {
		case r := <-methodCh:
			if *method == nil {
				*method = &r
			}
		default:
			cancelMethod()
			<-methodCh
		}
		cancelMethod()
	}()

	timer := time.NewTimer(s.SessionWait)
	defer timer.Stop()
	for {
		select {
		case <-sess.attached:
			sess.mu.Lock()
			module, uerr := sess.module, sess.moduleErr
			sess.mu.Unlock()
			if uerr != nil {
				s.reject(log, pre, player)
				return outcome{metrics.OutcomeError, "module websocket upgrade failed: " + uerr.Error()}
			}
			openDur := time.Since(start)
			s.Metrics.OpenDuration.Observe(openDur.Seconds())
			log.Info("session opened", "open_duration", openDur.Round(time.Millisecond).String(), "module", module.RemoteAddr().String())
			spliced = true
			return s.splice(ctx, sess, player, module, pre)

		case r := <-methodCh:
			methodCh = nil // the deferred collector must not wait again
			*method = &r
			if r.err != nil {
				s.reject(log, pre, player)
				return outcome{metrics.OutcomeMethodError, "tunnelOpen did not reach the module"}
			}
			if r.res.Status != 200 {
				s.reject(log, pre, player)
				return outcome{metrics.OutcomeMethodFailed, fmt.Sprintf("module answered tunnelOpen with %d", r.res.Status)}
			}
			// 200: the websocket is up and being attached; keep waiting.

		case <-pre.changed:
			if err := pre.failed(); err != nil {
				return outcome{metrics.OutcomePlayerGone, "player disconnected while the tunnel was opening: " + describe(err)}
			}

		case <-timer.C:
			s.reject(log, pre, player)
			return outcome{metrics.OutcomeTimeout, fmt.Sprintf("module did not connect within %v", s.SessionWait)}

		case <-ctx.Done():
			s.rejectNow(log, pre, player)
			return outcome{metrics.OutcomeShutdown, "relay shutting down"}
		}
	}
}

// reject answers the player's first RTSP request with 503, if it sends one
// within RejectGrace, before the caller closes the connection.
func (s *Server) reject(log *slog.Logger, pre *prefetcher, player net.Conn) {
	grace := s.RejectGrace
	if grace <= 0 {
		grace = time.Second
	}
	s.rejectWithin(log, pre, player, grace)
}

// rejectNow answers with 503 only if the request is already there
// (shutdown does not wait for players).
func (s *Server) rejectNow(log *slog.Logger, pre *prefetcher, player net.Conn) {
	s.rejectWithin(log, pre, player, time.Millisecond)
}

func (s *Server) rejectWithin(log *slog.Logger, pre *prefetcher, player net.Conn, grace time.Duration) {
	buf, _ := pre.waitFor(requestComplete, grace)
	reply := serviceUnavailable(buf)
	if reply == nil {
		return
	}
	player.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := player.Write(reply); err != nil {
		log.Debug("failed to send 503 to player", "error", err)
	}
}

// methodAttrs describes the tunnelOpen result for the session's log line.
func methodAttrs(m *methodResult) []any {
	if m == nil {
		return nil
	}
	if m.err != nil {
		attrs := []any{"method_error", m.err.Error()}
		var hs interface{ HTTPStatus() int }
		if errors.As(m.err, &hs) {
			attrs = append(attrs, "method_status", hs.HTTPStatus())
		}
		var rb interface{ ResponseBody() []byte }
		if errors.As(m.err, &rb) {
			attrs = append(attrs, bodyAttr(rb.ResponseBody())...)
		}
		return attrs
	}
	return append([]any{"method_status", m.res.Status}, bodyAttr(m.res.Body)...)
}

// bodyAttr logs a method or hub body: as JSON when it is valid and small,
// else as truncated text.
func bodyAttr(b []byte) []any {
	const maxBody = 4 << 10
	switch {
	case len(b) == 0:
		return nil
	case len(b) <= maxBody && json.Valid(b):
		return []any{"method_body", json.RawMessage(b)}
	default:
		return []any{"method_body", fmt.Sprintf("%.*s", maxBody, b)}
	}
}

// describe shortens common connection errors for log lines.
func describe(err error) string {
	switch {
	case err == nil:
		return "closed"
	case errors.Is(err, net.ErrClosed):
		return "connection closed"
	}
	msg := err.Error()
	if strings.HasSuffix(msg, "EOF") {
		return "EOF"
	}
	return msg
}
