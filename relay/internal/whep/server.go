package whep

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/upstream"
)

// MaxOfferSize bounds a WHEP offer's body. Browsers' offers are a few KiB;
// anything larger is refused with 413 before it is parsed.
const MaxOfferSize = 64 << 10

// ErrUnauthenticated is what Authenticate returns for a request without
// credentials.
var ErrUnauthenticated = errors.New("no credentials")

// Camera is one shared camera as WHEP sees it.
type Camera struct {
	// Name is the path: /whep/<Name>.
	Name string
	// Users may watch: user names or "*"; empty with AllowAnonymous means
	// anyone.
	Users []string
	// Source is the camera's shared upstream. Initialize sets its OnPacket
	// and OnStreamClose hooks, so it must run before Source.Initialize.
	Source *upstream.Source

	feed *feed // static after Initialize
}

// Status is what the page shows about a camera.
type Status struct {
	Name string `json:"name"`
	// State is the upstream's: idle, opening, live, reconnecting.
	State string `json:"state"`
	// Reason is why the last attempt to reach the camera failed, if it did.
	Reason string `json:"reason,omitempty"`
	// Viewers counts RTSP connections and WebRTC sessions watching.
	Viewers int `json:"viewers"`
	// Codec is the camera's video codec as last seen ("" before the
	// camera was first opened); Playable says whether browsers can play it.
	Codec    string `json:"codec,omitempty"`
	Playable bool   `json:"playable"`
}

// Server answers WHEP requests (POST /whep/<camera> with an SDP offer,
// DELETE on the session URL it returns) and sends each viewer the camera's
// H.264 from its shared upstream. Set the exported fields, call Initialize
// (before the cameras' sources are initialized), and Close when done.
//
// Wire contract:
//
//	POST   /whep/<camera>       Content-Type: application/sdp, an offer (non-trickle)
//	       → 201 Created, Content-Type: application/sdp, the answer with every
//	         candidate, Location: /whep/<camera>/<session id>
//	       → 400 malformed SDP or no H.264 video in the offer, 401 no or bad
//	         bearer token, 403 not on the camera's users, 404 unknown camera,
//	         413 body over MaxOfferSize, 415 not application/sdp, 422 the
//	         camera's codec cannot be played in a browser, 503 limits or the
//	         camera is unreachable (with Retry-After); the body says why
//	DELETE /whep/<camera>/<id>  → 200, the session ends; 404 unknown session
//	PATCH  /whep/<camera>/<id>  → 405: trickle ICE and ICE restarts are not
//	         supported (the answer carries every candidate; a new POST restarts)
//
// Refusals never acquire the upstream, so they open no tunnel.
type Server struct {
	// Cameras are the shared cameras. Required.
	Cameras []*Camera
	// AllowAnonymous lets anyone watch cameras without users.
	AllowAnonymous bool
	// Authenticate returns the user a request's credentials name,
	// ErrUnauthenticated without any, or another error for bad ones.
	// Required.
	Authenticate func(r *http.Request) (string, error)
	// ICE says where media flows. Required.
	ICE ICE
	// MaxViewersPerCamera and MaxViewers limit WebRTC sessions; 0 means no
	// limit.
	MaxViewersPerCamera, MaxViewers int
	// MaxSessionDuration ends a session after this long; 0 means none.
	MaxSessionDuration time.Duration
	// AcquireTimeout bounds how long an offer waits for the camera's stream
	// to open. Required.
	AcquireTimeout time.Duration
	// ConnectTimeout ends a session whose ICE and DTLS are not up within
	// it (default 30s).
	ConnectTimeout time.Duration
	// QueueFrames is each viewer's queue, in frames (default 128).
	QueueFrames int
	// Logger and Metrics are required.
	Logger  *slog.Logger
	Metrics *metrics.Metrics

	net     *network
	cameras map[string]*Camera // static after Initialize

	mu       sync.Mutex
	sessions map[string]*session // guarded by mu
	perCam   map[string]int      // guarded by mu
	closing  bool                // guarded by mu
	wg       sync.WaitGroup      // session goroutines
}

// Initialize opens the ICE sockets and hooks the feeds to the cameras'
// sources. On error nothing is left open.
func (s *Server) Initialize() error {
	if s.Authenticate == nil || s.Logger == nil || s.Metrics == nil || s.AcquireTimeout <= 0 {
		return errors.New("whep: Authenticate, Logger, Metrics and AcquireTimeout are required")
	}
	if s.ConnectTimeout <= 0 {
		s.ConnectTimeout = 30 * time.Second
	}
	if s.QueueFrames <= 0 {
		s.QueueFrames = 128
	}
	s.cameras = map[string]*Camera{}
	for _, c := range s.Cameras {
		if c.Source == nil {
			return fmt.Errorf("whep: camera %s has no source", c.Name)
		}
		if len(c.Users) == 0 && !s.AllowAnonymous {
			return fmt.Errorf("whep: camera %s has no users and anonymous access is off", c.Name)
		}
		s.cameras[c.Name] = c
	}
	n, err := s.ICE.listen(s.Logger)
	if err != nil {
		return err
	}
	s.net = n
	for _, c := range s.Cameras {
		c.feed = newFeed()
		c.Source.OnPacket = c.feed.onPacket
		c.Source.OnResume = c.feed.resume
		c.Source.OnStreamClose = func(stream *gortsplib.ServerStream) {
			c.feed.streamClosed(stream)
			s.endSessions(c.Name, stream)
		}
	}
	s.sessions = map[string]*session{}
	s.perCam = map[string]int{}
	return nil
}

// UDPAddr and TCPAddr return the ICE listeners' actual addresses ("" when
// disabled).
func (s *Server) UDPAddr() string { return s.net.udpAddr }

// TCPAddr returns the ICE-TCP listener's actual address ("" if disabled).
func (s *Server) TCPAddr() string { return s.net.tcpAddr }

// Close ends every session and closes the ICE sockets. Call it before
// the sources close.
func (s *Server) Close() {
	s.mu.Lock()
	s.closing = true
	all := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	s.mu.Unlock()
	for _, ss := range all {
		ss.end("relay shutting down")
	}
	s.wg.Wait()
	if s.net != nil {
		s.net.close()
	}
}

// Status returns what the page shows of camera name, if it exists.
func (s *Server) Status(name string) (Status, bool) {
	c := s.cameras[name]
	if c == nil {
		return Status{}, false
	}
	st := c.Source.Status()
	codec := c.feed.codecOf()
	out := Status{Name: name, State: st.State, Reason: st.LastErr, Viewers: st.Holds, Codec: codec, Playable: codec == "" || codec == "H264"}
	if !out.Playable {
		out.Reason = unplayable(name, codec)
	}
	return out, true
}

// Allowed reports whether user ("" for anonymous) may watch camera name.
func (s *Server) Allowed(name, user string) bool {
	c := s.cameras[name]
	if c == nil {
		return false
	}
	if len(c.Users) == 0 {
		return s.AllowAnonymous
	}
	for _, u := range c.Users {
		if u == "*" && user != "" || u == user && user != "" {
			return true
		}
	}
	return false
}

// Names returns the cameras' names in configuration order.
func (s *Server) Names() []string {
	names := make([]string, len(s.Cameras))
	for i, c := range s.Cameras {
		names[i] = c.Name
	}
	return names
}

// ServeHTTP serves /whep/<camera> and /whep/<camera>/<session id>; the
// caller routes the /whep/ prefix here.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/whep/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	name, id, hasID := strings.Cut(rest, "/")
	switch {
	case !hasID && r.Method == http.MethodPost:
		s.offer(w, r, name)
	case !hasID && r.Method == http.MethodOptions:
		w.Header().Set("Accept-Post", "application/sdp")
		w.Header().Set("Allow", "OPTIONS, POST")
		w.WriteHeader(http.StatusNoContent)
	case !hasID:
		w.Header().Set("Allow", "OPTIONS, POST")
		http.Error(w, "use POST with an SDP offer", http.StatusMethodNotAllowed)
	case r.Method == http.MethodDelete:
		s.delete(w, r, name, id)
	default:
		// PATCH (trickle ICE, ICE restart) is not supported: the answer
		// holds every candidate.
		w.Header().Set("Allow", "DELETE")
		http.Error(w, "only DELETE is supported on a session (no trickle ICE: the answer carries every candidate)", http.StatusMethodNotAllowed)
	}
}

// refuse answers an offer with status and a message, and counts it.
func (s *Server) refuse(w http.ResponseWriter, reason string, status int, msg string) {
	s.Metrics.WebRTC.Refused.WithLabelValues(reason).Inc()
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	http.Error(w, msg, status)
}

// authorize checks r for camera name: the user, or a refusal already
// written.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, name string, log *slog.Logger) (*Camera, string, bool) {
	cam := s.cameras[name]
	open := s.AllowAnonymous && cam != nil && len(cam.Users) == 0
	user, err := s.Authenticate(r)
	switch {
	case err == nil:
	case open && errors.Is(err, ErrUnauthenticated):
		user = ""
	default:
		// Unknown cameras get 401 too: a stranger cannot tell which
		// names exist.
		w.Header().Set("WWW-Authenticate", `Bearer realm="rtsptunnel"`)
		if !errors.Is(err, ErrUnauthenticated) {
			log.Warn("webrtc viewer refused: bad token", "error", err.Error())
		}
		s.refuse(w, metrics.WebRTCUnauthorized, http.StatusUnauthorized, "log in first: a bearer token from POST /login is required")
		return nil, "", false
	}
	if cam == nil {
		log.Info("webrtc viewer refused: no such camera", "user", user)
		s.refuse(w, metrics.WebRTCNotFound, http.StatusNotFound, "no such camera")
		return nil, "", false
	}
	if !s.Allowed(name, user) {
		log.Warn("webrtc viewer refused: user may not watch this camera", "user", user)
		s.refuse(w, metrics.WebRTCForbidden, http.StatusForbidden, "you may not watch this camera")
		return nil, "", false
	}
	return cam, user, true
}

func (s *Server) offer(w http.ResponseWriter, r *http.Request, name string) {
	start := time.Now()
	log := s.Logger.With("camera", name, "viewer", r.RemoteAddr)
	cam, user, ok := s.authorize(w, r, name, log)
	if !ok {
		return
	}
	log = log.With("user", user)
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/sdp" {
		s.refuse(w, metrics.WebRTCBadRequest, http.StatusUnsupportedMediaType, "the offer must be Content-Type: application/sdp")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxOfferSize))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.refuse(w, metrics.WebRTCBadRequest, http.StatusRequestEntityTooLarge, fmt.Sprintf("the offer is larger than %d bytes", MaxOfferSize))
			return
		}
		s.refuse(w, metrics.WebRTCBadRequest, http.StatusBadRequest, "failed to read the offer")
		return
	}
	if err := checkOffer(body); err != nil {
		log.Info("webrtc viewer refused: bad offer", "error", err.Error())
		s.refuse(w, metrics.WebRTCBadRequest, http.StatusBadRequest, err.Error())
		return
	}
	// A codec we learnt lately that browsers cannot play is refused
	// without opening anything; after a while the camera is asked again
	// (it may have been set to H.264 meanwhile).
	if codec := cam.feed.recentCodec(time.Minute); codec != "" && codec != "H264" {
		s.refuse(w, metrics.WebRTCUnplayable, http.StatusUnprocessableEntity, unplayable(name, codec))
		return
	}

	if !s.reserve(name) {
		log.Warn("webrtc viewer refused: limit reached")
		s.refuse(w, metrics.WebRTCLimit, http.StatusServiceUnavailable, "too many viewers; try again later")
		return
	}
	reserved := true
	defer func() {
		if reserved {
			s.unreserve(name)
		}
	}()
	ctx, cancel := context.WithTimeout(r.Context(), s.AcquireTimeout)
	stream, err := cam.Source.Acquire(ctx)
	cancel()
	if err != nil {
		log.Warn("webrtc viewer refused: camera unavailable", "error", err.Error())
		s.refuse(w, metrics.WebRTCUnavailable, http.StatusServiceUnavailable, "the camera is unavailable: "+err.Error())
		return
	}
	held := true
	defer func() {
		if held {
			cam.Source.Release()
		}
	}()
	forma, codec := videoFormat(stream.Desc)
	if codec == "" {
		codec = "no"
	}
	cam.feed.setCodec(codec)
	if forma == nil {
		log.Warn("webrtc viewer refused: codec not playable in a browser", "codec", codec)
		s.refuse(w, metrics.WebRTCUnplayable, http.StatusUnprocessableEntity, unplayable(name, codec))
		return
	}

	ss, sender, answer, err := s.newSession(cam, stream, user, string(body), log)
	if err != nil {
		log.Error("webrtc viewer refused: failed to answer", "error", err.Error())
		s.refuse(w, metrics.WebRTCError, http.StatusInternalServerError, "failed to answer the offer")
		return
	}
	ss.start = start
	if !s.add(ss) {
		ss.pc.Close()
		s.refuse(w, metrics.WebRTCUnavailable, http.StatusServiceUnavailable, "the relay is shutting down")
		return
	}
	held, reserved = false, false // the session owns them now
	ss.run(sender)
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/whep/"+name+"/"+ss.id)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, name, id string) {
	s.mu.Lock()
	ss := s.sessions[id]
	s.mu.Unlock()
	if ss == nil || ss.cam.Name != name {
		http.Error(w, "no such session", http.StatusNotFound)
		return
	}
	if ss.user != "" {
		// Only its owner ends a session (the URL alone is not enough).
		if user, err := s.Authenticate(r); err != nil || user != ss.user {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rtsptunnel"`)
			http.Error(w, "log in first", http.StatusUnauthorized)
			return
		}
	}
	ss.end("viewer hung up (DELETE)")
	w.WriteHeader(http.StatusOK)
}

// reserve counts a viewer against the limits.
func (s *Server) reserve(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	// perCam counts sessions and offers being answered.
	pending := 0
	for _, n := range s.perCam {
		pending += n
	}
	switch {
	case s.closing:
		return false
	case s.MaxViewersPerCamera > 0 && s.perCam[name] >= s.MaxViewersPerCamera,
		s.MaxViewers > 0 && pending >= s.MaxViewers:
		return false
	}
	s.perCam[name]++
	return true
}

func (s *Server) unreserve(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perCam[name]--; s.perCam[name] <= 0 {
		delete(s.perCam, name)
	}
}

// add registers a session and counts its two goroutines; false when the
// server is closing.
func (s *Server) add(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.sessions[ss.id] = ss
	s.wg.Add(2)
	return true
}

// removeSession forgets a session that ended.
func (s *Server) removeSession(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, ss.id)
}

// endSessions ends the sessions of camera that read stream, which stopped.
func (s *Server) endSessions(camera string, stream *gortsplib.ServerStream) {
	s.mu.Lock()
	var ended []*session
	for _, ss := range s.sessions {
		if ss.cam.Name == camera && ss.stream == stream {
			ended = append(ended, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range ended {
		// Not from the source's run goroutine, which ending waits for
		// (Release).
		go ss.end("the camera's stream ended")
	}
}

// checkOffer refuses what is not an SDP offer with H.264 video a browser
// sends: the message says what is wrong.
func checkOffer(body []byte) error {
	if len(body) == 0 {
		return errors.New("the body is empty: send the SDP offer")
	}
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(body); err != nil {
		return fmt.Errorf("the offer is not valid SDP: %w", err)
	}
	for _, m := range sd.MediaDescriptions {
		if m.MediaName.Media != "video" {
			continue
		}
		for _, a := range m.Attributes {
			if a.Key == "rtpmap" && strings.Contains(strings.ToUpper(a.Value), " H264/90000") {
				return nil
			}
		}
	}
	return errors.New("the offer has no H.264 video: the relay passes the camera's H.264 through and cannot transcode")
}

func unplayable(name, codec string) string {
	if codec == "" || codec == "no" {
		return fmt.Sprintf("camera %s sends no video", name)
	}
	return fmt.Sprintf("camera %s sends %s video, which browsers cannot play over WebRTC (the relay does not transcode); use an RTSP player, or set the camera to H.264", name, codec)
}

func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("failed to make a session id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// answerSDP waits for gathering (host candidates on the shared sockets:
// immediate) and returns the complete answer.
func answerSDP(ctx context.Context, pc *webrtc.PeerConnection) (string, error) {
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("failed to create the answer: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("failed to set the answer: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", fmt.Errorf("ICE gathering: %w", ctx.Err())
	}
	return pc.LocalDescription().SDP, nil
}
