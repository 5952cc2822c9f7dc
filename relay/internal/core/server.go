package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/token"
)

// Opener asks a camera's module to open a tunnel to the relay: the
// tunnelOpen direct method.
type Opener interface {
	// OpenTunnel returns the module's answer (any status), or an error when
	// the method did not reach the module or got no answer. An error that
	// has an HTTPStatus() int method (found with errors.As) reports IoT
	// Hub's status in the session's log line. An error with a
	// DeviceNotOnline() bool method that returns true (IoT Hub's 404103: the
	// module is not connected or not subscribed to methods, so it never saw
	// the call) is retried with a short backoff (see Server.NotOnlineRetry).
	// OpenTunnel must return when ctx is done.
	OpenTunnel(ctx context.Context, camera string, req OpenRequest) (OpenResult, error)
}

// OpenerFunc adapts a function to [Opener].
type OpenerFunc func(ctx context.Context, camera string, req OpenRequest) (OpenResult, error)

// OpenTunnel calls f.
func (f OpenerFunc) OpenTunnel(ctx context.Context, camera string, req OpenRequest) (OpenResult, error) {
	return f(ctx, camera, req)
}

// OpenRequest is what the module needs to dial back.
type OpenRequest struct {
	// SessionID names the session; Endpoint ends with it.
	SessionID string
	// Endpoint is the session's websocket URL (remoteEndpoint).
	Endpoint string
	// Token is the single-use bearer token (remoteAuthorizationToken).
	// It is a secret: never log it.
	Token string
}

// OpenResult is the module's answer to tunnelOpen.
type OpenResult struct {
	// Status is the module's status; 200 means the websocket is up.
	Status int
	// Body is the module's JSON payload, e.g. {"sessionId":..,"target":..}
	// or {"code":"400","target":..,"message":..}.
	Body json.RawMessage
}

// GoingAwayCloser is implemented by module connections that can tell the
// module the relay is shutting down (websocket close code 1001) instead of
// ending the tunnel normally (Close, code 1000).
type GoingAwayCloser interface {
	CloseGoingAway() error
}

// Server pairs player and module connections. Set the exported fields, then
// call Initialize; they must not change afterwards. All methods are safe for
// concurrent use.
type Server struct {
	// Logger receives session logs. Required.
	Logger *slog.Logger
	// Opener calls tunnelOpen. Required.
	Opener Opener
	// Metrics records sessions and bytes. Required.
	Metrics *metrics.Metrics
	// BaseURL is the public websocket base; a session's endpoint is
	// BaseURL + "/tunnels/" + id. Required.
	BaseURL *url.URL
	// SessionWait bounds the time from a player's connect until the
	// module's websocket is attached. Required.
	SessionWait time.Duration
	// TokenTTL is each session token's lifetime. Required.
	TokenTTL time.Duration
	// MaxSessionsPerCamera limits concurrent sessions per camera; 0 means
	// no limit.
	MaxSessionsPerCamera int
	// RejectGrace is how long a failed session waits for the player's first
	// request to answer it with 503; zero means one second.
	RejectGrace time.Duration
	// IdleTimeout ends a passthrough session that has received nothing from
	// the camera for this long; zero means never.
	IdleTimeout time.Duration
	// NotOnlineRetry is how long, from a session's start, a tunnelOpen that
	// IoT Hub answers 404103 (the module not connected or not subscribed to
	// methods, as while it renews its token) is called again, with a short
	// backoff; at most three quarters of SessionWait. Zero means never: the
	// 404103 ends the session at once.
	NotOnlineRetry time.Duration

	tokens token.Store // safe for concurrent use

	ctx    context.Context // static after Initialize; done on Close
	cancel context.CancelFunc

	mu        sync.Mutex
	sessions  map[string]*session // guarded by mu
	perCamera map[string]int      // guarded by mu
	closed    bool                // guarded by mu
	wg        sync.WaitGroup      // counts HandlePlayer and AcceptModule calls; Add under mu
}

// Initialize checks the configuration. It starts no goroutine.
func (s *Server) Initialize() error {
	switch {
	case s.Logger == nil:
		return errors.New("core: Logger is required")
	case s.Opener == nil:
		return errors.New("core: Opener is required")
	case s.Metrics == nil:
		return errors.New("core: Metrics is required")
	case s.BaseURL == nil:
		return errors.New("core: BaseURL is required")
	case s.SessionWait <= 0 || s.TokenTTL <= 0:
		return errors.New("core: SessionWait and TokenTTL must be positive")
	}
	// Every cause's series from the start, so that increase() sees the
	// first failure.
	for _, c := range Causes {
		s.Metrics.ModuleOpenFailures.WithLabelValues(c)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.sessions = make(map[string]*session)
	s.perCamera = make(map[string]int)
	return nil
}

// Close ends every session (tunnels get close code 1001), makes further
// HandlePlayer and AcceptModule calls return at once, and waits for the
// calls in progress to return.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// Active returns the number of sessions in progress.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// enter registers a call for Close to wait for; false after Close.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// AcceptModule serves a module's connection for sessionID. It redeems tok
// first: a missing, wrong, reused or expired token, or a session that no
// longer waits, returns an error wrapping token.ErrInvalid without calling
// upgrade, and the caller should answer HTTP 401. Otherwise it calls
// upgrade to obtain the connection, hands it to the session, and blocks
// until the session ends (the session closes the connection), so that a
// caller whose connection lives as long as its HTTP handler can simply
// return afterwards. Errors after the token check (a failed upgrade, a
// session that ended meanwhile) are returned as they are, and the
// connection, if any, is closed.
func (s *Server) AcceptModule(sessionID, tok string, upgrade func() (net.Conn, error)) error {
	if !s.enter() {
		return fmt.Errorf("%w: relay is shutting down", token.ErrInvalid)
	}
	defer s.wg.Done()

	if err := s.tokens.Redeem(sessionID, tok); err != nil {
		return err
	}
	s.mu.Lock()
	sess := s.sessions[sessionID]
	s.mu.Unlock()
	if sess == nil {
		return token.ErrUnknown
	}
	if !sess.waiting() {
		return fmt.Errorf("%w: session no longer waits for its module", token.ErrInvalid)
	}
	conn, err := upgrade()
	if err != nil {
		sess.attach(nil, err)
		return fmt.Errorf("failed to upgrade module connection: %w", err)
	}
	if !sess.attach(conn, nil) {
		conn.Close()
		return errors.New("session ended before the module connected")
	}
	<-sess.done
	return nil
}
