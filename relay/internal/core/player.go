package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
)

// errPlayerGone is the cancel cause of a passthrough player's Dial.
var errPlayerGone = &CancelCause{Outcome: metrics.OutcomePlayerGone, Reason: "player disconnected while the tunnel was opening"}

// HandlePlayer runs one passthrough session for a player that connected to
// camera: it opens a tunnel of its own ([Server.Dial]) and splices the
// player's bytes with it. It blocks until the session ends, and closes
// player. Canceling ctx (or Close) ends the session.
func (s *Server) HandlePlayer(ctx context.Context, camera string, player net.Conn) {
	if !s.enter() {
		player.Close()
		return
	}
	defer s.wg.Done()
	defer player.Close()
	log := s.Logger.With("camera", camera, "player", player.RemoteAddr().String())

	pre := startPrefetch(player, prefetchLimit)
	defer pre.stop() // idempotent; the splice stops it earlier

	// Give up opening when the player hangs up meanwhile.
	dctx, cancel := context.WithCancelCause(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-pre.changed:
				if pre.failed() != nil {
					cancel(errPlayerGone)
					return
				}
			case <-dctx.Done():
				return
			}
		}
	}()
	t, err := s.Dial(dctx, camera)
	cancel(nil)
	<-watched
	if err != nil {
		var de *DialError
		if errors.As(err, &de) && de.Outcome == metrics.OutcomeShutdown {
			s.rejectNow(log, pre, player)
		} else if !errors.As(err, &de) || de.Outcome != metrics.OutcomePlayerGone {
			s.reject(log, pre, player)
		}
		return
	}
	reason, goingAway := s.splice(ctx, camera, player, t, pre)
	t.End(reason, goingAway)
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
