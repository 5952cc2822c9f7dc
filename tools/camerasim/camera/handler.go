package camera

import (
	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
)

// handler receives gortsplib's callbacks. It is a separate type so that the callbacks do
// not become exported methods of Server. gortsplib calls it from its connection and
// session goroutines, concurrently; it only touches atomics and static fields.
type handler struct {
	s *Server
}

var (
	_ gortsplib.ServerHandlerOnConnOpen     = (*handler)(nil)
	_ gortsplib.ServerHandlerOnConnClose    = (*handler)(nil)
	_ gortsplib.ServerHandlerOnSessionOpen  = (*handler)(nil)
	_ gortsplib.ServerHandlerOnSessionClose = (*handler)(nil)
	_ gortsplib.ServerHandlerOnDescribe     = (*handler)(nil)
	_ gortsplib.ServerHandlerOnSetup        = (*handler)(nil)
	_ gortsplib.ServerHandlerOnPlay         = (*handler)(nil)

	// Implemented so that gortsplib never falls back to the global log package.
	_ gortsplib.ServerHandlerOnStreamWriteError = (*handler)(nil)
	_ gortsplib.ServerHandlerOnDecodeError      = (*handler)(nil)
	_ gortsplib.ServerHandlerOnPacketsLost      = (*handler)(nil)
)

// OnConnOpen implements gortsplib.ServerHandlerOnConnOpen.
func (h *handler) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	h.s.conns.Add(1)
	h.s.activeConns.Add(1)
	h.s.Logger.Debug("connection opened", "remote", ctx.Conn.NetConn().RemoteAddr().String())
}

// OnConnClose implements gortsplib.ServerHandlerOnConnClose.
func (h *handler) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	h.s.activeConns.Add(-1)
	h.s.Logger.Debug("connection closed", "remote", ctx.Conn.NetConn().RemoteAddr().String(),
		"reason", errString(ctx.Error))
}

// OnSessionOpen implements gortsplib.ServerHandlerOnSessionOpen.
func (h *handler) OnSessionOpen(ctx *gortsplib.ServerHandlerOnSessionOpenCtx) {
	h.s.sessions.Add(1)
	h.s.activeSessions.Add(1)
	h.s.Logger.Info("session opened", "remote", ctx.Conn.NetConn().RemoteAddr().String())
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (h *handler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	h.s.activeSessions.Add(-1)
	st := ctx.Session.Stats()
	h.s.Logger.Info("session closed", "reason", errString(ctx.Error), "bytes_sent", st.BytesSent)
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (h *handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := h.check(ctx.Conn, ctx.Request, ctx.Path); res != nil {
		return res, nil, err
	}
	return &base.Response{StatusCode: base.StatusOK}, h.s.published.Load(), nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (h *handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := h.check(ctx.Conn, ctx.Request, ctx.Path); res != nil {
		return res, nil, err
	}
	return &base.Response{StatusCode: base.StatusOK}, h.s.published.Load(), nil
}

// OnPlay implements gortsplib.ServerHandlerOnPlay. The session was authorized by SETUP.
func (h *handler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	h.s.plays.Add(1)
	h.s.Logger.Info("playing", "remote", ctx.Conn.NetConn().RemoteAddr().String(),
		"transport", ctx.Session.SetuppedTransport().String())
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnStreamWriteError implements gortsplib.ServerHandlerOnStreamWriteError. gortsplib
// calls it for each packet it drops because a client's write queue is full (a slow
// client or tunnel): like a real camera, the stream goes on for everyone else. Logged at
// the 1st, 2nd, 4th, 8th ... drop, so a stalled client cannot flood the log.
func (h *handler) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	if n := h.s.dropped.Add(1); n&(n-1) == 0 {
		h.s.Logger.Warn("dropped packets for a slow client", "dropped_total", n, "error", errString(ctx.Error))
	}
}

// OnDecodeError implements gortsplib.ServerHandlerOnDecodeError (bad RTCP from a client).
func (h *handler) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	h.s.Logger.Debug("undecodable packet from a client", "error", errString(ctx.Error))
}

// OnPacketsLost implements gortsplib.ServerHandlerOnPacketsLost. Only clients that
// publish send RTP, and the camera accepts none; kept for completeness.
func (h *handler) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	h.s.Logger.Debug("packets lost from a client", "lost", ctx.Lost)
}

// check answers a request for another path with 404, one without valid credentials
// with 401, and any request that arrives before the stream exists (a client faster than
// Initialize) with 503. It returns a nil response when the request may go on.
//
// For 401, gortsplib adds the WWW-Authenticate challenge when the request carried no
// credentials, and closes the connection after the answer when it carried wrong ones,
// as many cameras do.
func (h *handler) check(conn *gortsplib.ServerConn, req *base.Request, path string) (*base.Response, error) {
	if path != h.s.Path {
		h.s.Logger.Debug("unknown path", "path", path)
		return &base.Response{StatusCode: base.StatusNotFound}, nil
	}
	if h.s.published.Load() == nil {
		return &base.Response{StatusCode: base.StatusServiceUnavailable}, nil
	}
	if h.s.User == "" || conn.VerifyCredentials(req, h.s.User, h.s.Pass) {
		return nil, nil
	}
	if _, ok := req.Header["Authorization"]; ok {
		h.s.authFailures.Add(1)
		h.s.Logger.Info("credentials refused", "remote", conn.NetConn().RemoteAddr().String(),
			"method", string(req.Method))
	}
	return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
