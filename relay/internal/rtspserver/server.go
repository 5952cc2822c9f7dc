package rtspserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/auth"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/upstream"
)

// Camera is one shared camera as the server sees it.
type Camera struct {
	// Name is the path players request: rtsp://<relay>/<Name>.
	Name string
	// Users may watch: user names, or "*" for every user. Empty with
	// Server.AllowAnonymous means anyone.
	Users []string
	// Source is the camera's shared upstream; the server creates it in
	// Initialize from Upstream.
	Upstream upstream.Source
}

// Server serves shared cameras over RTSP and RTSPS. Set the exported
// fields, call Initialize, and Close when done.
type Server struct {
	// Listener is the RTSP listener. Required.
	Listener net.Listener
	// TLSListener and TLSConfig serve RTSPS when both are set.
	TLSListener net.Listener
	TLSConfig   *tls.Config
	// Cameras are the shared cameras. Their Upstream fields are completed
	// (Server, Logger, Metrics) and started by Initialize.
	Cameras []*Camera
	// Verifier checks credentials; required unless every camera is open
	// to anonymous players.
	Verifier *auth.Verifier
	// Limiter bounds authentication failures per source address. Required.
	Limiter *auth.Limiter
	// AllowAnonymous lets players watch cameras without a user list
	// without credentials.
	AllowAnonymous bool
	// MaxPlayersPerCamera and MaxPlayers limit players; 0 means no limit.
	MaxPlayersPerCamera, MaxPlayers int
	// MaxSessionDuration ends a playing session after this long; 0 means
	// no limit.
	MaxSessionDuration time.Duration
	// DescribeTimeout bounds how long a DESCRIBE waits for the camera's
	// stream to open. Required.
	DescribeTimeout time.Duration
	// WriteQueueSize is each player's queue, in packets (default 512).
	WriteQueueSize int
	// Logger and Metrics are required.
	Logger  *slog.Logger
	Metrics *metrics.Metrics

	srv       *gortsplib.Server
	ln        *mergedListener
	cameras   map[string]*Camera // static after Initialize
	protected bool               // static after Initialize: some camera has users

	mu        sync.Mutex
	players   map[string]int // guarded by mu: holds per camera
	total     int            // guarded by mu
	closing   bool           // guarded by mu
	startOnce sync.Once
}

// connData is a connection's state, owned by its gortsplib goroutine
// except holds, which OnConnClose reads after every request has returned.
type connData struct {
	remote netip.Addr
	secure bool
	log    *slog.Logger
	holds  map[string]bool // cameras this connection holds a viewer of
}

// sessionData is a session's state.
type sessionData struct {
	camera  string
	log     *slog.Logger
	mu      sync.Mutex
	playing bool        // guarded by mu
	timer   *time.Timer // guarded by mu: MaxSessionDuration
	dropped uint64      // guarded by mu
	lastLog time.Time   // guarded by mu: last "too slow" line
}

// Initialize starts the upstreams and the RTSP server. On error nothing is
// left running, but the listeners are the caller's to close.
func (s *Server) Initialize() error {
	if s.Listener == nil || s.Limiter == nil || s.Logger == nil || s.Metrics == nil || s.DescribeTimeout <= 0 {
		return errors.New("rtspserver: Listener, Limiter, Logger, Metrics and DescribeTimeout are required")
	}
	if s.WriteQueueSize == 0 {
		s.WriteQueueSize = 512
	}
	s.players = map[string]int{}
	s.cameras = map[string]*Camera{}
	for _, c := range s.Cameras {
		if c.Users == nil && !s.AllowAnonymous {
			return fmt.Errorf("rtspserver: camera %s has no users and anonymous access is off", c.Name)
		}
		if len(c.Users) > 0 && s.Verifier == nil {
			return errors.New("rtspserver: Verifier is required when a camera has users")
		}
		s.cameras[c.Name] = c
		s.protected = s.protected || len(c.Users) > 0
	}
	lns := []net.Listener{s.Listener}
	confs := []*tls.Config{nil}
	if s.TLSListener != nil && s.TLSConfig != nil {
		lns = append(lns, s.TLSListener)
		confs = append(confs, s.TLSConfig)
	}
	s.ln = newMergedListener(lns, confs)
	s.srv = &gortsplib.Server{
		Handler:     s,
		RTSPAddress: s.Listener.Addr().String(),
		Listen:      func(string, string) (net.Listener, error) { return s.ln, nil },
		// Players only read; a request every few seconds keeps TCP sessions
		// alive, and a stalled write ends the player, not the camera.
		WriteQueueSize: s.WriteQueueSize,
	}
	if err := s.srv.Start(); err != nil {
		s.ln.Close()
		return fmt.Errorf("failed to start the RTSP server: %w", err)
	}
	var started []*Camera
	for _, c := range s.Cameras {
		c.Upstream.Server = s.srv
		c.Upstream.Logger = s.Logger
		c.Upstream.Metrics = s.Metrics
		if err := c.Upstream.Initialize(); err != nil {
			for _, o := range started {
				o.Upstream.Close()
			}
			s.srv.Close()
			return fmt.Errorf("camera %s: %w", c.Name, err)
		}
		started = append(started, c)
	}
	return nil
}

// Close stops accepting players, closes every upstream (tunnels close,
// players' sessions end), and waits.
func (s *Server) Close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	for _, c := range s.Cameras {
		c.Upstream.Close()
	}
	s.srv.Close()
}

// Addr returns the RTSP listener's address.
func (s *Server) Addr() net.Addr { return s.Listener.Addr() }

// OnConnOpen implements gortsplib.ServerHandlerOnConnOpen.
func (s *Server) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	nc := ctx.Conn.NetConn()
	_, secure := nc.(*tls.Conn)
	var remote netip.Addr
	if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		remote = ap.Addr().Unmap()
	}
	ctx.Conn.SetUserData(&connData{
		remote: remote, secure: secure, holds: map[string]bool{},
		log: s.Logger.With("player", nc.RemoteAddr().String()),
	})
}

// OnConnClose implements gortsplib.ServerHandlerOnConnClose: the
// connection's viewers leave.
func (s *Server) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	cd, _ := ctx.Conn.UserData().(*connData)
	if cd == nil {
		return
	}
	for name := range cd.holds {
		s.release(name)
	}
	cd.holds = nil
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (s *Server) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	sd, _ := ctx.Session.UserData().(*sessionData)
	if sd == nil {
		return
	}
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if sd.timer != nil {
		sd.timer.Stop()
	}
	if sd.playing {
		sd.playing = false
		s.Metrics.Viewers.WithLabelValues(sd.camera).Dec()
		reason := "closed"
		if ctx.Error != nil {
			reason = ctx.Error.Error()
		}
		sd.log.Info("player left", "reason", reason, "packets_dropped", sd.dropped)
	}
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (s *Server) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	start := time.Now()
	cam, res := s.authorize(ctx.Conn, ctx.Request, ctx.Path)
	if res != nil {
		return res, nil, nil
	}
	stream, res := s.hold(ctx.Conn, cam)
	if res != nil {
		return res, nil, nil
	}
	s.Metrics.PlayerJoin.WithLabelValues(cam.Name).Observe(time.Since(start).Seconds())
	return &base.Response{StatusCode: base.StatusOK}, stream, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (s *Server) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Transport != gortsplib.TransportTCP {
		// UDP cannot be offered behind a cloud NAT; players fall back to TCP.
		return &base.Response{StatusCode: base.StatusUnsupportedTransport}, nil, nil
	}
	cam, res := s.authorize(ctx.Conn, ctx.Request, ctx.Path)
	if res != nil {
		return res, nil, nil
	}
	if sd, ok := ctx.Session.UserData().(*sessionData); ok && sd.camera != cam.Name {
		return &base.Response{StatusCode: base.StatusBadRequest}, nil, errors.New("a session reads one camera")
	}
	stream, res := s.hold(ctx.Conn, cam)
	if res != nil {
		return res, nil, nil
	}
	if ctx.Session.UserData() == nil {
		cd := ctx.Conn.UserData().(*connData)
		ctx.Session.SetUserData(&sessionData{camera: cam.Name, log: cd.log.With("camera", cam.Name)})
	}
	return &base.Response{StatusCode: base.StatusOK}, stream, nil
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (s *Server) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	sd, _ := ctx.Session.UserData().(*sessionData)
	if sd == nil {
		return &base.Response{StatusCode: base.StatusBadRequest}, errors.New("PLAY before SETUP")
	}
	if _, res := s.authorize(ctx.Conn, ctx.Request, "/"+sd.camera); res != nil {
		return res, nil
	}
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if !sd.playing {
		sd.playing = true
		s.Metrics.Viewers.WithLabelValues(sd.camera).Inc()
		sd.log.Info("player joined")
		if s.MaxSessionDuration > 0 {
			ss := ctx.Session
			sd.timer = time.AfterFunc(s.MaxSessionDuration, func() {
				sd.log.Info("player session reached maxSessionDuration", "max", s.MaxSessionDuration.String())
				ss.Close()
			})
		}
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnStreamWriteError implements gortsplib.ServerHandlerOnStreamWriteError:
// a player's queue is full (it reads too slowly), so the packet is dropped
// for that player only.
func (s *Server) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	sd, _ := ctx.Session.UserData().(*sessionData)
	if sd == nil {
		return
	}
	s.Metrics.PlayerDropped.WithLabelValues(sd.camera).Inc()
	sd.mu.Lock()
	defer sd.mu.Unlock()
	sd.dropped++
	if time.Since(sd.lastLog) >= 10*time.Second {
		sd.lastLog = time.Now()
		sd.log.Warn("player is too slow; dropping packets", "packets_dropped", sd.dropped, "error", ctx.Error.Error())
	}
}

// hold makes the connection a viewer of cam (once per camera) and returns
// the camera's stream, opening the upstream if needed.
func (s *Server) hold(conn *gortsplib.ServerConn, cam *Camera) (*gortsplib.ServerStream, *base.Response) {
	cd := conn.UserData().(*connData)
	log := cd.log.With("camera", cam.Name)
	if !cd.holds[cam.Name] {
		s.mu.Lock()
		switch {
		case s.closing:
			s.mu.Unlock()
			return nil, s.refuse(metrics.RefusedUnavailable, base.StatusServiceUnavailable)
		case s.MaxPlayersPerCamera > 0 && s.players[cam.Name] >= s.MaxPlayersPerCamera,
			s.MaxPlayers > 0 && s.total >= s.MaxPlayers:
			s.mu.Unlock()
			log.Warn("player refused: limit reached", "camera_players", s.players[cam.Name], "players", s.total)
			return nil, s.refuse(metrics.RefusedLimit, base.StatusServiceUnavailable)
		}
		s.players[cam.Name]++
		s.total++
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), s.DescribeTimeout)
		stream, err := cam.Upstream.Acquire(ctx)
		cancel()
		if err != nil {
			s.unhold(cam.Name)
			log.Warn("player refused: camera unavailable", "error", err.Error())
			return nil, s.refuse(metrics.RefusedUnavailable, base.StatusServiceUnavailable)
		}
		cd.holds[cam.Name] = true
		return stream, nil
	}
	// The stream may have been replaced by a reconnect since this
	// connection's first request: always hand out the current one.
	stream, err := cam.currentStream()
	if err != nil {
		log.Warn("player refused: camera unavailable", "error", err.Error())
		return nil, s.refuse(metrics.RefusedUnavailable, base.StatusServiceUnavailable)
	}
	return stream, nil
}

func (c *Camera) currentStream() (*gortsplib.ServerStream, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A second Acquire by the same connection returns the live stream at
	// once; it is given back immediately (the connection's first hold
	// keeps the upstream open).
	st, err := c.Upstream.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	c.Upstream.Release()
	return st, nil
}

func (s *Server) release(name string) {
	if cam := s.cameras[name]; cam != nil {
		cam.Upstream.Release()
	}
	s.unhold(name)
}

func (s *Server) unhold(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.players[name]--; s.players[name] <= 0 {
		delete(s.players, name)
	}
	s.total--
}

func (s *Server) refuse(reason string, status base.StatusCode) *base.Response {
	s.Metrics.Refused.WithLabelValues(reason).Inc()
	return &base.Response{StatusCode: status}
}

// authorize checks a DESCRIBE, SETUP or PLAY request for path and returns
// the camera, or the response refusing it.
func (s *Server) authorize(conn *gortsplib.ServerConn, req *base.Request, path string) (*Camera, *base.Response) {
	cd := conn.UserData().(*connData)
	name := strings.TrimSuffix(strings.TrimPrefix(path, "/"), "/")
	cam := s.cameras[name]

	// A camera without users is open with AllowAnonymous. An unknown path
	// is answered 404 without credentials only when every camera is open:
	// otherwise a stranger could tell the protected cameras' names (401)
	// from names that do not exist (404).
	open := s.AllowAnonymous && (cam != nil && len(cam.Users) == 0 || cam == nil && !s.protected)
	user := ""
	if !open {
		if s.Verifier == nil {
			return nil, s.refuse(metrics.RefusedBadCredentials, base.StatusUnauthorized)
		}
		if !s.Limiter.Allowed(cd.remote) {
			wait := s.Limiter.RetryAfter(cd.remote)
			cd.log.Debug("authentication rate limited", "retry_after", wait.String())
			res := s.refuse(metrics.RefusedRateLimited, base.StatusServiceUnavailable)
			res.Header = base.Header{"Retry-After": base.HeaderValue{strconv.Itoa(int(wait.Seconds()) + 1)}}
			return nil, res
		}
		var err error
		user, err = s.Verifier.Check(string(req.Method), req.URL.String(), firstHeader(req, "Authorization"), cd.secure)
		switch {
		case errors.Is(err, auth.ErrNoCredentials):
			return nil, s.challenge(cd, false)
		case errors.Is(err, auth.ErrStale):
			return nil, s.challenge(cd, true)
		case err != nil:
			limited := s.Limiter.Failed(cd.remote)
			cd.log.Warn("authentication failed", "user", auth.UserOf(err), "path", path, "method", string(req.Method), "error", err.Error(), "rate_limited", limited)
			s.Metrics.Refused.WithLabelValues(metrics.RefusedBadCredentials).Inc()
			return nil, s.challenge(cd, false)
		}
	}
	if cam == nil {
		cd.log.Info("player refused: no such camera", "path", path, "user", user)
		return nil, s.refuse(metrics.RefusedNotFound, base.StatusNotFound)
	}
	if !open && !allows(cam.Users, user) {
		cd.log.Warn("player refused: user may not watch this camera", "camera", cam.Name, "user", user)
		return nil, s.refuse(metrics.RefusedForbidden, base.StatusForbidden)
	}
	return cam, nil
}

func (s *Server) challenge(cd *connData, stale bool) *base.Response {
	return &base.Response{
		StatusCode: base.StatusUnauthorized,
		Header:     base.Header{"WWW-Authenticate": base.HeaderValue(s.Verifier.Challenge(cd.secure, stale))},
	}
}

func allows(users []string, user string) bool {
	for _, u := range users {
		if u == "*" || u == user {
			return true
		}
	}
	return false
}

func firstHeader(req *base.Request, name string) string {
	if v := req.Header[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}
