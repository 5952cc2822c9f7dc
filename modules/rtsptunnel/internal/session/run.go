package session

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/coder/websocket"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/tunnel"
)

// run is a tunnel's goroutine: it splices until the tunnel ends, then records
// the end. s is the settings snapshot the tunnel was opened with.
func (m *Manager) run(sess *session, camera net.Conn, ws *tunnel.Conn, s settings.Settings, log *slog.Logger) {
	defer m.wg.Done()
	toRemote, toCamera := m.Metrics.ByteCounters()
	res := tunnel.Splice(m.runCtx, camera, ws, tunnel.SpliceOptions{
		PingInterval:  s.PingInterval,
		PingTimeout:   s.PingTimeout,
		IdleTimeout:   s.IdleTimeout,
		MaxDuration:   s.MaxSessionDuration,
		Stats:         &sess.stats,
		ToRemoteTotal: toRemote,
		ToCameraTotal: toCamera,
	})
	m.finish(sess, res, log)
}

// finish moves a tunnel from live to closed, and logs and counts its end once.
func (m *Manager) finish(sess *session, res tunnel.Result, log *slog.Logger) {
	now := time.Now()
	m.mu.Lock()
	delete(m.live, sess.id)
	sess.closedAt = now
	sess.result = res
	if res.Err != nil {
		sess.lastError = truncate(res.Err.Error(), maxErrorLen)
		m.lastError = truncate("session "+sess.id+": "+res.Err.Error(), maxErrorLen)
		m.lastErrorAt = now
	}
	m.closed = append(m.closed, sess)
	m.pruneLocked(now)
	m.mu.Unlock()

	m.Metrics.SessionClosed(string(res.Reason))
	level := slog.LevelInfo
	if !normalEnd(res) {
		level = slog.LevelWarn
	}
	attrs := []any{"outcome", res.Reason, "close_code", int(res.CloseCode), "duration", res.Duration,
		"bytes_to_remote", res.ToRemote, "bytes_to_camera", res.ToCamera}
	if res.Err != nil {
		attrs = append(attrs, "error", res.Err.Error())
	}
	log.Log(context.Background(), level, "session closed", attrs...)
	m.notify()
}

// normalEnd reports whether a tunnel ended the way tunnels are meant to end.
func normalEnd(res tunnel.Result) bool {
	switch res.Reason {
	case tunnel.ReasonCameraClosed, tunnel.ReasonIdle, tunnel.ReasonMaxDuration, tunnel.ReasonShutdown:
		return true
	case tunnel.ReasonRemoteClosed:
		return res.CloseCode == websocket.StatusNormalClosure || res.CloseCode == websocket.StatusGoingAway
	}
	return false
}

// pruneLocked drops closed sessions past retention (and the oldest beyond
// maxSessions, bounding memory), then arms the expiry timer for the next one.
// Caller holds m.mu.
func (m *Manager) pruneLocked(now time.Time) {
	retention := m.cfg.s.SessionRetention
	drop := 0
	for drop < len(m.closed) && (now.Sub(m.closed[drop].closedAt) >= retention || len(m.closed)-drop > m.cfg.s.MaxSessions) {
		drop++
	}
	if drop > 0 {
		clear(m.closed[:drop])
		m.closed = m.closed[drop:]
	}
	if len(m.closed) == 0 || m.stopping { // no timer outlives Shutdown
		return
	}
	next := m.closed[0].closedAt.Add(retention).Sub(now)
	if m.expiry == nil {
		m.expiry = time.AfterFunc(next, m.notify)
	} else {
		m.expiry.Reset(next)
	}
}

// Shutdown stops accepting calls (they get 503), closes every tunnel with
// 1001 (going away) and waits for their goroutines, or until ctx ends (then it
// returns ctx's error while tunnels finish closing). Closed sessions remain in
// Snapshot, so a final report shows them.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.stopping = true
	m.mu.Unlock()
	m.stopRun()

	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(errors.New("tunnels still closing"), ctx.Err())
	}
	m.mu.Lock()
	if m.expiry != nil {
		m.expiry.Stop()
	}
	m.mu.Unlock()
	return nil
}
