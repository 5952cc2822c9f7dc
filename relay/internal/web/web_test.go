package web

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/auth"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/whep"
)

const password = "correct horse battery staple"

// fakeCameras is door (alice only) and lobby (open to anyone).
type fakeCameras struct{}

func (fakeCameras) Names() []string { return []string{"door", "lobby"} }
func (fakeCameras) Allowed(name, user string) bool {
	return name == "lobby" || name == "door" && user == "alice"
}
func (fakeCameras) Status(name string) (whep.Status, bool) {
	return whep.Status{Name: name, State: "idle", Playable: true}, true
}

// alice is made once: hashing is slow by design.
var alice = sync.OnceValues(func() (auth.User, error) {
	u, err := auth.HashPassword("alice", "rtsptunnel", password)
	if err != nil {
		return u, err
	}
	// The cheapest bcrypt: the tests check the flow, not the cost.
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	u.Hash = string(h)
	return u, err
})

func newHandler(t *testing.T, ttl time.Duration) (*Handler, *Signer) {
	t.Helper()
	u, err := alice()
	if err != nil {
		t.Fatal(err)
	}
	v := &auth.Verifier{Realm: "rtsptunnel", Users: []auth.User{u}}
	if err := v.Initialize(); err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(ttl)
	if err != nil {
		t.Fatal(err)
	}
	whepCalled := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	return &Handler{Signer: s, Verifier: v, Limiter: &auth.Limiter{Every: time.Hour}, Cameras: fakeCameras{}, WHEP: whepCalled, Logger: slog.New(slog.DiscardHandler)}, s
}

func postLogin(t *testing.T, h http.Handler, tls bool, user, pass string, header ...string) (int, tokenReply, http.Header) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "https://relay/login", strings.NewReader(url.Values{"user": {user}, "password": {pass}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if !tls {
		req.TLS = nil
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body tokenReply
	json.Unmarshal(rec.Body.Bytes(), &body)
	return rec.Code, body, rec.Header()
}

// TestLogin: the right password over TLS gets a token naming the user;
// a wrong one, an unknown user, or plain HTTP do not; the failures are
// rate limited per address.
func TestLogin(t *testing.T) {
	h, s := newHandler(t, time.Minute)
	for _, tc := range []struct {
		name, user, pass string
		tls              bool
		want             int
	}{
		{"right", "alice", password, true, 200},
		{"plain HTTP", "alice", password, false, 403},
		{"wrong password", "alice", "guess", true, 401},
		{"unknown user", "mallory", password, true, 401},
		{"empty", "", "", true, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := postLogin(t, h, tc.tls, tc.user, tc.pass)
			if code != tc.want {
				t.Fatalf("%d, want %d", code, tc.want)
			}
			if code == 200 {
				if user, err := s.Verify(body.Token); err != nil || user != "alice" {
					t.Errorf("token names %q, %v", user, err)
				}
			} else if body.Token != "" {
				t.Error("a token for a refused login")
			}
		})
	}
	// Behind a TLS-terminating proxy (insecureWS), the proxy's
	// X-Forwarded-Proto counts; without that mode it does not.
	if code, _, _ := postLogin(t, h, false, "alice", password, "X-Forwarded-Proto", "https"); code != http.StatusForbidden {
		t.Errorf("plain HTTP claiming https, not behind a proxy: %d, want 403", code)
	}
	h.BehindTLSProxy = true
	if code, _, _ := postLogin(t, h, false, "alice", password, "X-Forwarded-Proto", "https"); code != http.StatusOK {
		t.Errorf("behind a TLS proxy: %d, want 200", code)
	}
	if code, _, _ := postLogin(t, h, false, "alice", password); code != http.StatusForbidden {
		t.Errorf("behind a TLS proxy, plain HTTP to the proxy: %d, want 403", code)
	}
	h.BehindTLSProxy = false
	// Two failures above; the limiter allows 10 in a burst.
	for range 8 {
		postLogin(t, h, true, "alice", "guess")
	}
	code, _, hdr := postLogin(t, h, true, "alice", password)
	if code != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" {
		t.Errorf("after 10 failures: %d (Retry-After %q), want 429 with Retry-After, even with the right password", code, hdr.Get("Retry-After"))
	}
}

// TestTokens: forged, altered, expired and foreign tokens are refused.
func TestTokens(t *testing.T) {
	s, _ := NewSigner(time.Minute)
	other, _ := NewSigner(time.Minute)
	tok, _ := s.Sign("alice")
	forged, _ := other.Sign("alice")
	now := time.Now()
	old := &Signer{key: s.key, ttl: time.Minute, now: func() time.Time { return now.Add(-2 * time.Minute) }}
	expired, _ := old.Sign("alice")
	for _, tc := range []struct {
		name, tok string
		want      error
	}{
		{"valid", tok, nil},
		{"another key", forged, ErrBadToken},
		{"user changed", strings.Replace(tok, tok[3:8], "Ym9i", 1), ErrBadToken},
		{"garbage", "hello", ErrBadToken},
		{"empty", "", ErrBadToken},
		{"expired", expired, ErrExpiredToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, err := s.Verify(tc.tok)
			if err != tc.want || (err == nil && user != "alice") {
				t.Errorf("Verify: %q, %v; want %v", user, err, tc.want)
			}
		})
	}
}

// TestCameras: the list shows what the token's user may watch; without a
// token only open cameras; a bad token is 401.
func TestCameras(t *testing.T) {
	h, s := newHandler(t, time.Minute)
	tok, _ := s.Sign("alice")
	for _, tc := range []struct {
		name, auth string
		want       int
		cams       string
	}{
		{"alice", "Bearer " + tok, 200, "door,lobby"},
		{"anonymous", "", 200, "lobby"},
		{"bad token", "Bearer nope", 401, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "https://relay/api/cameras", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("%d, want %d", rec.Code, tc.want)
			}
			var body camerasReply
			json.Unmarshal(rec.Body.Bytes(), &body)
			var names []string
			for _, c := range body.Cameras {
				names = append(names, c.Name)
			}
			if got := strings.Join(names, ","); got != tc.cams {
				t.Errorf("cameras %q, want %q", got, tc.cams)
			}
		})
	}
}

// TestPage: the embedded page and its script are served with a
// content security policy; /whep/ goes to the WHEP handler.
func TestPage(t *testing.T) {
	h, _ := newHandler(t, time.Minute)
	srv := httptest.NewServer(h)
	defer srv.Close()
	for path, want := range map[string]string{"/": "<video", "/app.js": "/whep/", "/style.css": ".camera"} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(b), want) || !strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: %d, CSP %q, body lacks %q", path, res.StatusCode, res.Header.Get("Content-Security-Policy"), want)
		}
	}
	res, err := http.Post(srv.URL+"/whep/door", "application/sdp", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTeapot {
		t.Errorf("/whep/ went elsewhere: %d", res.StatusCode)
	}
}
