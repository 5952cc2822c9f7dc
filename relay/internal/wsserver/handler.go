package wsserver

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/token"
)

// Acceptor is the core's side of module connections (core.Server).
type Acceptor interface {
	// AcceptModule checks tok for sessionID and returns an error wrapping
	// token.ErrInvalid without calling upgrade when it is refused.
	// Otherwise it calls upgrade and blocks until the tunnel ends.
	AcceptModule(sessionID, tok string, upgrade func() (net.Conn, error)) error
}

// Handler serves module websockets. Set the fields before serving; it is
// then safe for concurrent use.
type Handler struct {
	// Acceptor receives module connections. Required.
	Acceptor Acceptor
	// Prefix is the path of the public URL ("" or e.g. "/relay"); tunnels
	// are served at Prefix + "/tunnels/<id>".
	Prefix string
	// Logger receives one line per refused or failed module connection.
	// Required.
	Logger *slog.Logger
}

// ServeHTTP serves one module websocket; for an accepted one it returns when
// the tunnel has ended.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.URL.Path, strings.TrimRight(h.Prefix, "/")+"/tunnels/")
	if !ok || strings.Contains(id, "/") {
		http.NotFound(w, r)
		return
	}
	log := h.Logger.With("session", id, "remote", r.RemoteAddr)
	err := h.Acceptor.AcceptModule(id, bearer(r.Header.Get("Authorization")), func() (net.Conn, error) {
		spy := &hijackSpy{ResponseWriter: w}
		ws, err := websocket.Accept(spy, r, &websocket.AcceptOptions{
			// Video is already compressed; deflate would only cost CPU.
			CompressionMode: websocket.CompressionDisabled,
		})
		if err != nil {
			return nil, err
		}
		log.Debug("module connected",
			"user_agent", r.UserAgent(),
			"connection_source", r.Header.Get("TunnelConnectionSource"))
		// r.Context() lives until ServeHTTP returns, which is after the
		// tunnel has ended: AcceptModule blocks until then.
		return newCorkedConn(r.Context(), ws, spy.conn), nil
	})
	switch {
	case errors.Is(err, token.ErrInvalid):
		log.Warn("module connection refused", "reason", err.Error(), "user_agent", r.UserAgent())
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	case err != nil:
		log.Warn("module connection failed", "error", err.Error())
	}
}

// bearer extracts the token from an "Authorization: Bearer <token>" value.
func bearer(v string) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}
