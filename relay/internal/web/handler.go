package web

import (
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/auth"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/whep"
)

//go:embed static
var static embed.FS

// maxLoginBody bounds a login form: a name and a password.
const maxLoginBody = 4 << 10

// Cameras is what the page needs to know of the cameras; *whep.Server
// implements it.
type Cameras interface {
	Names() []string
	Allowed(name, user string) bool
	Status(name string) (whep.Status, bool)
}

// Handler serves the page and its API. Set the fields before use; its
// methods are safe for concurrent use.
//
//	GET  /                the page (static files embedded in the binary)
//	POST /login           form user=..&password=.. over TLS only → 200
//	                      {"token","user","expires"}; 401 wrong credentials;
//	                      403 over plain HTTP; 429 too many failures (Retry-After)
//	POST /api/token       Authorization: Bearer <token> → a fresh token (as /login)
//	GET  /api/cameras     Authorization: Bearer <token> (or none: the cameras
//	                      open to anonymous viewers) → {"user","cameras":[whep.Status]}
//	/whep/...             the WHEP endpoint (WHEP)
type Handler struct {
	Signer   *Signer
	Verifier *auth.Verifier
	Limiter  *auth.Limiter
	Cameras  Cameras
	// WHEP serves /whep/.
	WHEP   http.Handler
	Logger *slog.Logger
	// BehindTLSProxy accepts a login that arrived over plain HTTP with
	// X-Forwarded-Proto: https (the relay's insecureWS mode, behind a
	// TLS-terminating proxy). Otherwise a login needs TLS to the relay.
	BehindTLSProxy bool
}

// Authenticate returns the user named by r's bearer token, or
// whep.ErrUnauthenticated when it carries none.
func (s *Signer) Authenticate(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", whep.ErrUnauthenticated
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", ErrBadToken
	}
	return s.Verify(strings.TrimSpace(tok))
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The page loads only its own files, and nobody frames it.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; object-src 'none'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	switch p := r.URL.Path; {
	case strings.HasPrefix(p, "/whep/"):
		h.WHEP.ServeHTTP(w, r)
	case p == "/login":
		h.login(w, r)
	case p == "/api/token":
		h.refresh(w, r)
	case p == "/api/cameras":
		h.cameras(w, r)
	case p == "/" || p == "/index.html" || p == "/app.js" || p == "/style.css":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		sub, _ := fs.Sub(static, "static")
		w.Header().Set("Cache-Control", "no-cache")
		http.FileServerFS(sub).ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}

type tokenReply struct {
	Token   string    `json:"token"`
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
	TTL     int       `json:"ttlSeconds"`
}

type errorReply struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, errorReply{"use POST"})
		return
	}
	if r.TLS == nil && !(h.BehindTLSProxy && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")) {
		// A password over plain HTTP is readable on the way.
		writeJSON(w, http.StatusForbidden, errorReply{"log in over HTTPS: the relay refuses passwords over plain HTTP"})
		return
	}
	addr := remoteAddr(r)
	if !h.Limiter.Allowed(addr) {
		wait := h.Limiter.RetryAfter(addr)
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		writeJSON(w, http.StatusTooManyRequests, errorReply{"too many failed logins from your address; try again later"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, errorReply{"send the form fields user and password"})
		return
	}
	user, pass := r.PostForm.Get("user"), r.PostForm.Get("password")
	if user == "" || pass == "" {
		writeJSON(w, http.StatusBadRequest, errorReply{"send the form fields user and password"})
		return
	}
	// The same check as RTSPS Basic: the bcrypt/argon2id hash, the same
	// time for unknown users, bounded concurrent hash runs.
	cred := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	name, err := h.Verifier.Check(http.MethodPost, "/login", cred, true)
	if err != nil {
		limited := h.Limiter.Failed(addr)
		h.Logger.Warn("login failed", "user", auth.UserOf(err), "viewer", r.RemoteAddr, "error", err.Error(), "rate_limited", limited)
		writeJSON(w, http.StatusUnauthorized, errorReply{"wrong user name or password"})
		return
	}
	h.Logger.Info("login", "user", name, "viewer", r.RemoteAddr)
	h.issue(w, name)
}

func (h *Handler) issue(w http.ResponseWriter, user string) {
	tok, exp := h.Signer.Sign(user)
	writeJSON(w, http.StatusOK, tokenReply{Token: tok, User: user, Expires: exp, TTL: int(h.Signer.TTL().Seconds())})
}

func (h *Handler) refresh(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, errorReply{"use POST"})
		return
	}
	user, err := h.Signer.Authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rtsptunnel"`)
		writeJSON(w, http.StatusUnauthorized, errorReply{"log in again"})
		return
	}
	h.issue(w, user)
}

type camerasReply struct {
	User    string        `json:"user"`
	Cameras []whep.Status `json:"cameras"`
}

func (h *Handler) cameras(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeJSON(w, http.StatusMethodNotAllowed, errorReply{"use GET"})
		return
	}
	user, err := h.Signer.Authenticate(r)
	if err != nil && !errors.Is(err, whep.ErrUnauthenticated) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rtsptunnel"`)
		writeJSON(w, http.StatusUnauthorized, errorReply{"log in again"})
		return
	}
	out := camerasReply{User: user, Cameras: []whep.Status{}}
	for _, name := range h.Cameras.Names() {
		if !h.Cameras.Allowed(name, user) {
			continue
		}
		if st, ok := h.Cameras.Status(name); ok {
			out.Cameras = append(out.Cameras, st)
		}
	}
	writeJSON(w, http.StatusOK, out)
}
