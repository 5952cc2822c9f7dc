package wsserver

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

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
	// Logger receives one line per refused or failed module connection,
	// and one per module found unresponsive. Required.
	Logger *slog.Logger
	// PingInterval is the time between websocket pings to each module;
	// 0 disables pings. A module that vanished without closing its
	// connection (no FIN, no RST) is detected within PingInterval +
	// PingTimeout: its connection is aborted, and the Conn's blocked and
	// later calls fail with an error wrapping ErrDeadPeer.
	//
	// The pong is read by whoever is reading the Conn, so this assumes the
	// consumer keeps a Read or WriteTo pending, as the relay's core always
	// does. A consumer that stops reading for longer than PingTimeout (for
	// instance blocked writing to a frozen player) is treated as dead too,
	// which is what the relay wants: that tunnel is stuck either way.
	PingInterval time.Duration
	// PingTimeout is how long to wait for each pong; 0 means PingInterval.
	// coder/websocket gives up writing a ping after 5 s of its own, so
	// values above 5 s only lengthen the wait for the pong.
	PingTimeout time.Duration
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
		return newCorkedConn(r.Context(), ws, spy.conn, pingOptions{
			interval: h.PingInterval,
			timeout:  h.PingTimeout,
			log:      log,
		}), nil
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
