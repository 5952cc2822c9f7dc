package rtspserver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gsauth "github.com/bluenviron/gortsplib/v4/pkg/auth"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/auth"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

const (
	gateRealm         = "relay@gate-test"
	gateURI           = "rtsp://127.0.0.1:8554/door"
	gateAlicePassword = "wonderland-42"
	gateBobPassword   = "builder-7"
)

var gateLoopback = netip.MustParseAddr("127.0.0.1")

var (
	gateUsersOnce sync.Once
	gateUsers     []auth.User
	gateUsersErr  error
)

// gateTestUsers returns alice and bob, hashed once per test binary
// (bcrypt cost 12 is slow under the race detector).
func gateTestUsers(t *testing.T) []auth.User {
	t.Helper()
	gateUsersOnce.Do(func() {
		var wg sync.WaitGroup
		var errs [2]error
		gateUsers = make([]auth.User, 2)
		for i, np := range [][2]string{{"alice", gateAlicePassword}, {"bob", gateBobPassword}} {
			wg.Go(func() { gateUsers[i], errs[i] = auth.HashPassword(np[0], gateRealm, np[1]) })
		}
		wg.Wait()
		gateUsersErr = errors.Join(errs[:]...)
	})
	if gateUsersErr != nil {
		t.Fatal(gateUsersErr)
	}
	return gateUsers
}

type gateEnv struct {
	gate     *Gate
	verifier *auth.Verifier
	limiter  *auth.Limiter
	metrics  *metrics.Metrics
	logs     *testutil.LogBuffer
}

// newGateEnv returns a Gate for camera "door" open to alice, with a real
// Verifier, a default Limiter, metrics and a JSON log. mod adjusts the
// Verifier (before Initialize), the Limiter and the Gate.
func newGateEnv(t *testing.T, mod func(*auth.Verifier, *auth.Limiter, *Gate)) *gateEnv {
	t.Helper()
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e := &gateEnv{
		verifier: &auth.Verifier{Realm: gateRealm, Users: gateTestUsers(t)},
		limiter:  &auth.Limiter{},
		metrics:  m,
		logs:     &testutil.LogBuffer{},
	}
	e.gate = &Gate{
		Camera:   "door",
		Users:    []string{"alice"},
		Verifier: e.verifier,
		Limiter:  e.limiter,
		Metrics:  m,
		Logger:   e.logs.Logger(slog.LevelDebug),
		Timeout:  10 * time.Second,
	}
	if mod != nil {
		mod(e.verifier, e.limiter, e.gate)
	}
	if err := e.verifier.Initialize(); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *gateEnv) refused(reason string) float64 {
	return promtest.ToFloat64(e.metrics.Refused.WithLabelValues(reason))
}

// checkRefused fails unless relay_rtsp_refused_total counts want for the
// reasons in want and zero for every other reason.
func (e *gateEnv) checkRefused(t *testing.T, want map[string]float64) {
	t.Helper()
	for _, r := range metrics.Refusals {
		if got := e.refused(r); got != want[r] {
			t.Errorf("refused{reason=%q} = %v, want %v", r, got, want[r])
		}
	}
}

// gateTimeout is a test's deadline.
const gateTimeout = 20 * time.Second

// gateTCPPair returns both ends of a loopback TCP connection (so that the
// Limiter sees 127.0.0.1), the client's with ctx's deadline, both closed at
// cleanup.
func gateTCPPair(ctx context.Context, t *testing.T) (client, server net.Conn) {
	t.Helper()
	client, server = testutil.TCPPair(ctx, t)
	deadline, _ := ctx.Deadline()
	client.SetDeadline(deadline)
	return client, server
}

// gateDeadlineConn records the deadlines set on it.
type gateDeadlineConn struct {
	net.Conn
	mu          sync.Mutex
	read, write time.Time // guarded by mu
}

func (c *gateDeadlineConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.read, c.write = t, t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *gateDeadlineConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.read = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *gateDeadlineConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.write = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *gateDeadlineConn) deadlines() (read, write time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.read, c.write
}

type gateAdmitResult struct {
	conn net.Conn
	err  error
}

// startGateAdmit runs Admit in a goroutine and returns a function that waits
// for its result. At cleanup, server is closed and the goroutine awaited.
func startGateAdmit(ctx context.Context, t *testing.T, g *Gate, server net.Conn, secure bool) func() gateAdmitResult {
	t.Helper()
	var res gateAdmitResult
	done := make(chan struct{}) // closed once res is set
	go func() {
		defer close(done)
		res.conn, res.err = g.Admit(server, secure)
	}()
	wait := func() gateAdmitResult {
		select {
		case <-done:
			return res
		case <-ctx.Done():
			t.Fatal("Admit did not return:", ctx.Err())
			return gateAdmitResult{}
		}
	}
	t.Cleanup(func() {
		server.Close()
		select {
		case <-done:
		case <-ctx.Done(): // still live: the test's context ends after this cleanup
			t.Error("Admit still running at cleanup")
		}
	})
	return wait
}

// connect opens a loopback connection to e's Gate, runs Admit on its
// server end (secure as for RTSPS) and returns the player, within a
// gateTimeout context.
func (e *gateEnv) connect(t *testing.T, secure bool) *gatePlayer {
	t.Helper()
	return e.connectCtx(testutil.Context(t, gateTimeout), t, secure)
}

// connectCtx is connect within ctx, for a test that needs longer than
// gateTimeout.
func (e *gateEnv) connectCtx(ctx context.Context, t *testing.T, secure bool) *gatePlayer {
	t.Helper()
	client, server := gateTCPPair(ctx, t)
	p := newGatePlayer(t, client)
	p.server, p.wait = server, startGateAdmit(ctx, t, e.gate, server, secure)
	return p
}

// player is the client side.
type gatePlayer struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader

	server net.Conn               // the gate's end, when made by connect
	wait   func() gateAdmitResult // Admit's result, when made by connect
}

func newGatePlayer(t *testing.T, c net.Conn) *gatePlayer {
	return &gatePlayer{t: t, conn: c, br: bufio.NewReader(c)}
}

func (p *gatePlayer) send(b []byte) {
	p.t.Helper()
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

func (p *gatePlayer) response() *base.Response {
	p.t.Helper()
	var res base.Response
	if err := res.Unmarshal(p.br); err != nil {
		p.t.Fatalf("failed to read a response: %v", err)
	}
	return &res
}

// challenge sends a DESCRIBE without credentials and returns the 401,
// failing unless it is a plain (not RTSPS, not stale) challenge for cseq.
func (p *gatePlayer) challenge(cseq int) *base.Response {
	p.t.Helper()
	p.send(gateReq("DESCRIBE", gateURI, cseq))
	res := p.response()
	checkGateChallenge(p.t, res, cseq, false, false)
	return res
}

// raw reads exactly n bytes.
func (p *gatePlayer) raw(n int) string {
	p.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(p.br, b); err != nil {
		p.t.Fatalf("read %q: %v", b, err)
	}
	return string(b)
}

// closed fails unless the gate closes the connection without writing
// anything more.
func (p *gatePlayer) closed() {
	p.t.Helper()
	b, _ := io.ReadAll(p.br) // EOF, or a reset when unread bytes were discarded
	if len(b) != 0 {
		p.t.Fatalf("got %q, want nothing", b)
	}
}

// request returns an RTSP request without a body.
func gateReq(method, uri string, cseq int, headers ...string) []byte {
	s := fmt.Sprintf("%s %s RTSP/1.0\r\nCSeq: %d\r\nUser-Agent: gate-test\r\n", method, uri, cseq)
	for _, h := range headers {
		s += h + "\r\n"
	}
	return []byte(s + "\r\n")
}

// gateWithCredentials builds a request answering res's challenge with
// gortsplib's client-side Digest (or Basic, if that is all it was offered).
func gateWithCredentials(t *testing.T, res *base.Response, user, pass, method string, cseq int) []byte {
	t.Helper()
	s := &gsauth.Sender{WWWAuth: res.Header["WWW-Authenticate"], User: user, Pass: pass}
	if err := s.Initialize(); err != nil {
		t.Fatalf("gortsplib does not accept the challenge %q: %v", res.Header["WWW-Authenticate"], err)
	}
	u, err := base.ParseURL(gateURI)
	if err != nil {
		t.Fatal(err)
	}
	req := base.Request{Method: base.Method(method), URL: u, Header: base.Header{
		"CSeq":       base.HeaderValue{strconv.Itoa(cseq)},
		"User-Agent": base.HeaderValue{"gate-test"},
	}}
	s.AddAuthorization(&req)
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var gateChallengeRE = regexp.MustCompile(`^Digest realm="` + regexp.QuoteMeta(gateRealm) + `", nonce="([^"]+)", algorithm=MD5, qop="auth"(, stale=TRUE)?$`)

// checkGateChallenge fails unless res is a 401 for cseq offering Digest first
// (and Basic when secure), with stale=TRUE when stale.
func checkGateChallenge(t *testing.T, res *base.Response, cseq int, secure, stale bool) {
	t.Helper()
	if res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("status %d, want 401", res.StatusCode)
	}
	if got := res.Header["CSeq"]; len(got) != 1 || got[0] != strconv.Itoa(cseq) {
		t.Fatalf("CSeq %q, want %d", got, cseq)
	}
	ch := res.Header["WWW-Authenticate"]
	want := 1
	if secure {
		want = 2
	}
	if len(ch) != want {
		t.Fatalf("WWW-Authenticate %q, want %d values", ch, want)
	}
	m := gateChallengeRE.FindStringSubmatch(ch[0])
	if m == nil || (m[2] != "") != stale {
		t.Fatalf("Digest challenge %q (stale %v)", ch[0], stale)
	}
	if secure && ch[1] != `Basic realm="`+gateRealm+`"` {
		t.Fatalf("Basic challenge %q", ch[1])
	}
}

func TestGateAdmitsAfterChallenge(t *testing.T) {
	tests := []struct {
		name   string
		secure bool
		first  []byte // the request without credentials
	}{
		{"plain", false, gateReq("DESCRIBE", gateURI, 1)},
		{"TLS offers Basic too", true, gateReq("DESCRIBE", gateURI, 1)},
		{"LF line ends", false, []byte("DESCRIBE " + gateURI + " RTSP/1.0\nCSeq: 1\n\n")},
		{"body skipped", false, []byte("DESCRIBE " + gateURI + " RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 5\r\n\r\nhello")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newGateEnv(t, nil)
			ctx := testutil.Context(t, gateTimeout)
			client, server := gateTCPPair(ctx, t)
			dc := &gateDeadlineConn{Conn: server}
			wait := startGateAdmit(ctx, t, e.gate, dc, tc.secure)
			p := newGatePlayer(t, client)

			p.send(tc.first)
			res := p.response()
			checkGateChallenge(t, res, 1, tc.secure, false)

			admitted := gateWithCredentials(t, res, "alice", gateAlicePassword, "DESCRIBE", 2)
			pipelined := gateReq("GET_PARAMETER", gateURI, 3)
			p.send(append(append([]byte(nil), admitted...), pipelined...))
			r := wait()
			if r.err != nil {
				t.Fatalf("Admit: %v", r.err)
			}
			if rd, wr := dc.deadlines(); !rd.IsZero() || !wr.IsZero() {
				t.Fatalf("deadlines left set: read %v, write %v", rd, wr)
			}

			later := []byte("$\x00\x00\x04abcd")
			p.send(later)
			want := string(admitted) + string(pipelined) + string(later)
			got := make([]byte, len(want))
			if _, err := io.ReadFull(r.conn, got); err != nil {
				t.Fatalf("reading the admitted conn: %v", err)
			}
			if string(got) != want {
				t.Fatalf("admitted conn replays\n%q\nwant\n%q", got, want)
			}

			// The camera's answer is the next thing the player reads: the
			// gate answered nothing after the 401.
			const camera = "RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n"
			if _, err := r.conn.Write([]byte(camera)); err != nil {
				t.Fatal(err)
			}
			if got := p.raw(len(camera)); got != camera {
				t.Fatalf("player read %q, want the camera's %q", got, camera)
			}

			e.checkRefused(t, nil)
			if !e.limiter.Allowed(gateLoopback) || e.limiter.RetryAfter(gateLoopback) != 0 {
				t.Fatal("a challenge counted as a failure")
			}
			if logs := e.logs.String(); !strings.Contains(logs, `"msg":"player authenticated"`) || !strings.Contains(logs, `"user":"alice"`) {
				t.Fatalf("no admission logged:\n%s", logs)
			}
		})
	}
}

func TestGateOptions(t *testing.T) {
	e := newGateEnv(t, nil)
	p := e.connect(t, false)

	p.send(gateReq("OPTIONS", gateURI, 1))
	const want = "RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: rtsptunnel-relay\r\n" +
		"Public: OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER\r\nContent-Length: 0\r\n\r\n"
	if got := p.raw(len(want)); got != want {
		t.Fatalf("OPTIONS answer\n%q\nwant\n%q", got, want)
	}

	// An OPTIONS with credentials is answered by the gate as well.
	p.send(gateReq("OPTIONS", gateURI, 2, "Authorization: Basic "+base64.StdEncoding.EncodeToString([]byte("alice:x"))))
	if res := p.response(); res.StatusCode != base.StatusOK || res.Header["CSeq"][0] != "2" {
		t.Fatalf("second OPTIONS answered %v", res)
	}

	res := p.challenge(3)
	admitted := gateWithCredentials(t, res, "alice", gateAlicePassword, "DESCRIBE", 4)
	p.send(admitted)
	r := p.wait()
	if r.err != nil {
		t.Fatal(r.err)
	}
	got := make([]byte, len(admitted))
	if _, err := io.ReadFull(r.conn, got); err != nil || !bytes.Equal(got, admitted) {
		t.Fatalf("replayed %q, %v; want the DESCRIBE %q", got, err, admitted)
	}
	e.checkRefused(t, nil)
}

func TestGateWrongPassword(t *testing.T) {
	e := newGateEnv(t, func(_ *auth.Verifier, l *auth.Limiter, _ *Gate) { l.Burst = 1 })
	p := e.connect(t, false)

	res := p.challenge(1)

	p.send(gateWithCredentials(t, res, "alice", "wonderland-43", "DESCRIBE", 2))
	res = p.response()
	checkGateChallenge(t, res, 2, false, false) // same connection, fresh challenge
	if e.limiter.Allowed(gateLoopback) {
		t.Fatal("the failure was not recorded with the Limiter")
	}
	e.checkRefused(t, map[string]float64{metrics.RefusedBadCredentials: 1})

	// With Burst 1 the address is now limited: even the right password
	// gets 503, and the gate hangs up.
	p.send(gateWithCredentials(t, res, "alice", gateAlicePassword, "DESCRIBE", 3))
	res = p.response()
	if res.StatusCode != base.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", res.StatusCode)
	}
	if r := p.wait(); r.err == nil {
		t.Fatal("Admit admitted a rate-limited player")
	}
	logs := e.logs.String()
	for _, s := range []string{`"level":"WARN"`, `"msg":"authentication failed"`, `"user":"alice"`, `"method":"DESCRIBE"`, `"path":"/door"`, `"rate_limited":true`, `"camera":"door"`} {
		if !strings.Contains(logs, s) {
			t.Errorf("log lacks %s:\n%s", s, logs)
		}
	}
}

func TestGateUsers(t *testing.T) {
	tests := []struct {
		name      string
		users     []string
		anonymous bool
		user      string
		pass      string
		admitted  bool
	}{
		{"listed user", []string{"alice"}, false, "alice", gateAlicePassword, true},
		{"valid user not listed", []string{"alice"}, false, "bob", gateBobPassword, false},
		{"star", []string{"*"}, false, "bob", gateBobPassword, true},
		{"no users, anonymous off", nil, false, "alice", gateAlicePassword, false},
		{"anonymous on, but the camera has users", []string{"alice"}, true, "bob", gateBobPassword, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newGateEnv(t, func(_ *auth.Verifier, _ *auth.Limiter, g *Gate) {
				g.Users, g.AllowAnonymous = tc.users, tc.anonymous
			})
			p := e.connect(t, false)

			res := p.challenge(1)
			p.send(gateWithCredentials(t, res, tc.user, tc.pass, "DESCRIBE", 2))
			if tc.admitted {
				if r := p.wait(); r.err != nil {
					t.Fatal(r.err)
				}
				e.checkRefused(t, nil)
				return
			}
			res = p.response()
			if res.StatusCode != base.StatusForbidden || res.Header["CSeq"][0] != "2" {
				t.Fatalf("got %v, want 403 for CSeq 2", res)
			}
			if r := p.wait(); r.err == nil {
				t.Fatal("Admit admitted a user not allowed")
			}
			p.server.Close() // as the caller does
			p.closed()
			e.checkRefused(t, map[string]float64{metrics.RefusedForbidden: 1})
			if !e.limiter.Allowed(gateLoopback) {
				t.Fatal("a 403 counted as a failure")
			}
		})
	}
}

// gateDigestQop is a qop=auth Digest answer built by hand: unlike the RFC 2069
// form gortsplib sends, its nonce count makes the Verifier refuse the same
// header twice, which shows whether the gate checked it.
func gateDigestQop(user, pass, nonce, method, uri string) string {
	h := func(s string) string {
		sum := md5.Sum([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	const nc, cnonce = "00000001", "0a4f113b"
	resp := h(h(user+":"+gateRealm+":"+pass) + ":" + nonce + ":" + nc + ":" + cnonce + ":auth:" + h(method+":"+uri))
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", qop=auth, nc=%s, cnonce="%s"`,
		user, gateRealm, nonce, uri, resp, nc, cnonce)
}

func TestGateRateLimited(t *testing.T) {
	e := newGateEnv(t, func(_ *auth.Verifier, l *auth.Limiter, _ *Gate) { l.Burst = 1 })
	p := e.connect(t, false)

	res := p.challenge(1)
	nonce := gateChallengeRE.FindStringSubmatch(res.Header["WWW-Authenticate"][0])[1]

	e.limiter.Failed(gateLoopback) // e.g. another connection from the same address
	authz := gateDigestQop("alice", gateAlicePassword, nonce, "DESCRIBE", gateURI)
	p.send(gateReq("DESCRIBE", gateURI, 2, "Authorization: "+authz))
	res = p.response()
	if res.StatusCode != base.StatusServiceUnavailable || res.Header["CSeq"][0] != "2" {
		t.Fatalf("got %v, want 503 for CSeq 2", res)
	}
	ra := res.Header["Retry-After"]
	if len(ra) != 1 {
		t.Fatalf("Retry-After %q", ra)
	}
	if n, err := strconv.Atoi(ra[0]); err != nil || n < 1 || n > 7 {
		t.Fatalf("Retry-After %q, want 1..7 seconds (one failure of the default 6 s)", ra[0])
	}
	if r := p.wait(); r.err == nil {
		t.Fatal("Admit admitted a rate-limited player")
	}
	p.server.Close() // as the caller does
	p.closed()
	e.checkRefused(t, map[string]float64{metrics.RefusedRateLimited: 1})

	// The Verifier never saw the header: its nonce count is still unused.
	if user, err := e.verifier.Check("DESCRIBE", gateURI, authz, false); err != nil || user != "alice" {
		t.Fatalf("the gate consumed the credentials: %q, %v", user, err)
	}
	if _, err := e.verifier.Check("DESCRIBE", gateURI, authz, false); !errors.Is(err, auth.ErrReplay) {
		t.Fatalf("second check: %v, want ErrReplay (else the proof above proves nothing)", err)
	}
}

func TestGateStaleNonce(t *testing.T) {
	clock := testutil.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	e := newGateEnv(t, func(v *auth.Verifier, _ *auth.Limiter, _ *Gate) {
		v.Now, v.NonceTTL = clock.Now, time.Minute
	})
	p := e.connect(t, false)

	res := p.challenge(1)
	clock.Add(2 * time.Minute)
	p.send(gateWithCredentials(t, res, "alice", gateAlicePassword, "DESCRIBE", 2))
	res = p.response()
	checkGateChallenge(t, res, 2, false, true)
	p.send(gateWithCredentials(t, res, "alice", gateAlicePassword, "DESCRIBE", 3))
	if r := p.wait(); r.err != nil {
		t.Fatal(r.err)
	}
	e.checkRefused(t, nil)
	if e.limiter.RetryAfter(gateLoopback) != 0 || !e.limiter.Allowed(gateLoopback) {
		t.Fatal("a stale nonce counted as a failure")
	}
}

func TestGateNotRTSP(t *testing.T) {
	tests := []struct {
		name  string
		bytes string
	}{
		{"interleaved data", "$\x00\x00\x04abcd"},
		{"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"},
		{"HTTP", "GET / HTTP/1.1\r\nHost: relay\r\n\r\n"},
		{"RTSP over HTTP tunnel", "GET /door HTTP/1.0\r\nx-sessioncookie: abc\r\n\r\n"},
		{"lower-case method", "describe " + gateURI + " RTSP/1.0\r\nCSeq: 1\r\n\r\n"},
		{"RTSP 2.0", "DESCRIBE " + gateURI + " RTSP/2.0\r\nCSeq: 1\r\n\r\n"},
		{"two fields", "DESCRIBE RTSP/1.0\r\nCSeq: 1\r\n\r\n"},
		{"double space", "DESCRIBE  " + gateURI + " RTSP/1.0\r\nCSeq: 1\r\n\r\n"},
		{"control character in URI", "DESCRIBE rtsp://x/\x01 RTSP/1.0\r\n\r\n"},
		{"endless first line", strings.Repeat("A", gateMaxHeader+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newGateEnv(t, nil)
			p := e.connect(t, false)
			p.send([]byte(tc.bytes))
			r := p.wait()
			if !errors.Is(r.err, errGateNotRTSP) {
				t.Fatalf("Admit: %v, want errGateNotRTSP", r.err)
			}
			p.server.Close() // as the caller does
			p.closed()
			e.checkRefused(t, nil)
		})
	}
}

func TestGateBadRequest(t *testing.T) {
	head := "DESCRIBE " + gateURI + " RTSP/1.0\r\nCSeq: 1\r\n"
	tests := []struct {
		name  string
		bytes string
	}{
		{"header too large", head + "X-Pad: " + strings.Repeat("a", gateMaxHeader) + "\r\n\r\n"},
		{"many headers", head + strings.Repeat("X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 400) + "\r\n"},
		{"header line without colon", head + "NoColonHere\r\n\r\n"},
		{"space in header name", head + "Bad Name: x\r\n\r\n"},
		{"continuation first", "DESCRIBE " + gateURI + " RTSP/1.0\r\n  folded\r\n\r\n"},
		{"Content-Length not a number", head + "Content-Length: ten\r\n\r\n"},
		{"Content-Length negative", head + "Content-Length: -1\r\n\r\n"},
		{"Content-Length signed", head + "Content-Length: +1\r\n\r\n"},
		{"Content-Length twice, differing", head + "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
		{"body too large", head + "Content-Length: " + strconv.Itoa(gateMaxBody+1) + "\r\n\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newGateEnv(t, nil)
			p := e.connect(t, false)
			p.send([]byte(tc.bytes))
			const want = "RTSP/1.0 400 Bad Request\r\nServer: rtsptunnel-relay\r\nContent-Length: 0\r\n\r\n"
			if got := p.raw(len(want)); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
			if r := p.wait(); !errors.Is(r.err, errGateBadRequest) {
				t.Fatalf("Admit: %v, want errGateBadRequest", r.err)
			}
		})
	}
}

func TestGateOpenCamera(t *testing.T) {
	g := &Gate{Camera: "lobby", AllowAnonymous: true} // no Verifier or Limiter needed
	ctx := testutil.Context(t, gateTimeout)
	client, server := gateTCPPair(ctx, t)
	// The player has sent nothing: Admit must not wait for it.
	wait := startGateAdmit(ctx, t, g, server, false)
	r := wait()
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.conn != server {
		t.Fatalf("Admit returned %T, want the connection itself", r.conn)
	}
	msg := gateReq("DESCRIBE", "rtsp://relay/lobby", 1)
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(r.conn, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestGateMisconfigured(t *testing.T) {
	g := &Gate{Camera: "door", Users: []string{"alice"}}
	ctx := testutil.Context(t, gateTimeout)
	_, server := gateTCPPair(ctx, t)
	if _, err := g.Admit(server, false); err == nil {
		t.Fatal("a Gate without Verifier and Limiter admitted a player of a protected camera")
	}
}

func TestGateTimeout(t *testing.T) {
	tests := []struct {
		name string
		send string
	}{
		{"silent player", ""},
		{"half a request", "DESCRIBE " + gateURI + " RTSP/1.0\r\nCSeq: 1\r\n"},
		{"half a body", "DESCRIBE " + gateURI + " RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 10\r\n\r\nabc"},
		{"silent after the challenge", string(gateReq("DESCRIBE", gateURI, 1))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newGateEnv(t, func(_ *auth.Verifier, _ *auth.Limiter, g *Gate) { g.Timeout = 200 * time.Millisecond })
			// The test waits up to a minute, so that a Gate that ignored
			// its Timeout would return at the 30 s default inside it and
			// be caught by the 20 s bound below; the 200 ms path is a
			// hundred times shorter than the bound, which no load reaches.
			ctx := testutil.Context(t, time.Minute)
			client, server := gateTCPPair(ctx, t)
			start := time.Now()
			wait := startGateAdmit(ctx, t, e.gate, server, false)
			if tc.send != "" {
				newGatePlayer(t, client).send([]byte(tc.send))
			}
			r := wait()
			if !errors.Is(r.err, os.ErrDeadlineExceeded) {
				t.Fatalf("Admit: %v, want a deadline error", r.err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Fatalf("dropped after %v, want about 200ms (the 30 s default applied?)", d)
			}
		})
	}
}

func TestGateTooManyAttempts(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		answers int
	}{
		{"401s", "DESCRIBE", gateMaxChallenges},
		{"OPTIONS", "OPTIONS", gateMaxRequests},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newGateEnv(t, nil)
			p := e.connect(t, false)
			for i := 1; i <= tc.answers; i++ {
				p.send(gateReq(tc.method, gateURI, i))
				if res := p.response(); res.Header["CSeq"][0] != strconv.Itoa(i) {
					t.Fatalf("answer %d: %v", i, res)
				}
			}
			if r := p.wait(); r.err == nil {
				t.Fatal("Admit admitted a player without credentials")
			}
			p.server.Close()
			p.closed()
		})
	}
}

func TestGateLogsNoSecrets(t *testing.T) {
	// The Basic check runs bcrypt cost 12: seconds under the race detector.
	e := newGateEnv(t, func(_ *auth.Verifier, _ *auth.Limiter, g *Gate) { g.Timeout = time.Minute })
	p := e.connectCtx(testutil.Context(t, 2*time.Minute), t, true)

	const wrongBasic, wrongDigest = "not-the-password-1", "not-the-password-2"
	basic := func(pass string) string {
		return "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+pass))
	}
	// Some players put credentials or tokens in the URL: the log gets
	// the path only.
	const inURL, inQuery = "pass-in-url", "token-in-query"
	p.send(gateReq("DESCRIBE", "rtsp://alice:"+inURL+"@127.0.0.1:8554/door?t="+inQuery, 1, basic(wrongBasic)))
	res := p.response()
	checkGateChallenge(t, res, 1, true, false)
	// Digest, because gortsplib prefers it when both are offered.
	p.send(gateWithCredentials(t, res, "alice", wrongDigest, "DESCRIBE", 2))
	res = p.response()
	checkGateChallenge(t, res, 2, true, false)
	p.send(gateWithCredentials(t, res, "alice", gateAlicePassword, "DESCRIBE", 3))
	if r := p.wait(); r.err != nil {
		t.Fatal(r.err)
	}

	logs := e.logs.String()
	if n := strings.Count(logs, `"path":"/door"`); n != 2 {
		t.Fatalf("%d failures logged with path /door, want 2:\n%s", n, logs)
	}
	if n := strings.Count(logs, `"msg":"authentication failed"`); n != 2 {
		t.Fatalf("%d failures logged, want 2:\n%s", n, logs)
	}
	for _, secret := range []string{
		wrongBasic, wrongDigest, gateAlicePassword, inURL, inQuery,
		base64.StdEncoding.EncodeToString([]byte("alice:" + wrongBasic)),
		"Authorization", "Basic ", "Digest ", "response=",
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains %q:\n%s", secret, logs)
		}
	}
}

func TestGateConcurrentPlayers(t *testing.T) {
	e := newGateEnv(t, nil)
	ctx := testutil.Context(t, gateTimeout)
	var wg sync.WaitGroup
	var waits []func() gateAdmitResult
	for i := range 8 {
		client, server := gateTCPPair(ctx, t)
		wait := startGateAdmit(ctx, t, e.gate, server, false)
		wg.Go(func() {
			// t.Fatal must not run here; errors are reported with t.Error.
			br := bufio.NewReader(client)
			if _, err := client.Write(gateReq("DESCRIBE", gateURI, 1)); err != nil {
				t.Error(err)
				return
			}
			var res base.Response
			if err := res.Unmarshal(br); err != nil || res.StatusCode != base.StatusUnauthorized {
				t.Errorf("player %d: %v, %v", i, res, err)
				return
			}
			s := &gsauth.Sender{WWWAuth: res.Header["WWW-Authenticate"], User: "alice", Pass: gateAlicePassword}
			if err := s.Initialize(); err != nil {
				t.Error(err)
				return
			}
			u, _ := base.ParseURL(gateURI)
			req := base.Request{Method: base.Describe, URL: u, Header: base.Header{"CSeq": base.HeaderValue{"2"}}}
			s.AddAuthorization(&req)
			b, _ := req.Marshal()
			if _, err := client.Write(b); err != nil {
				t.Error(err)
			}
		})
		waits = append(waits, wait)
	}
	wg.Wait()
	for i, wait := range waits {
		if r := wait(); r.err != nil {
			t.Errorf("player %d: %v", i, r.err)
		}
	}
}

func TestReadGateRequest(t *testing.T) {
	tests := []struct {
		name      string
		in        string // the request
		after     string // bytes that follow it
		method    string
		cseq      string
		authz     string
		wantError error
	}{
		{name: "CRLF", in: "PLAY rtsp://h/door RTSP/1.0\r\nCSeq: 7\r\n\r\n", method: "PLAY", cseq: "7"},
		{name: "LF", in: "PLAY rtsp://h/door RTSP/1.0\nCSeq: 7\n\n", method: "PLAY", cseq: "7"},
		{name: "header name case", in: "PLAY rtsp://h/door RTSP/1.0\r\ncseq:7\r\nAUTHORIZATION: Digest x\r\n\r\n", method: "PLAY", cseq: "7", authz: "Digest x"},
		{name: "first Authorization counts", in: "PLAY * RTSP/1.0\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", method: "PLAY", authz: "a"},
		{name: "folded header", in: "PLAY * RTSP/1.0\r\nAuthorization: Digest\r\n  username=\"a\"\r\n\r\n", method: "PLAY", authz: `Digest username="a"`},
		{name: "folded duplicate ignored", in: "PLAY * RTSP/1.0\r\nAuthorization: a\r\nAuthorization: b\r\n c\r\n\r\n", method: "PLAY", authz: "a"},
		{name: "body", in: "SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 4\r\n\r\nx: y", after: "OPTIONS * RTSP/1.0\r\n\r\n", method: "SET_PARAMETER", cseq: "1"},
		{name: "pipelined", in: "OPTIONS * RTSP/1.0\r\n\r\n", after: "OPTIONS * RTSP/1.0\r\n\r\n", method: "OPTIONS"},
		{name: "CSeq with text is not echoed", in: "PLAY * RTSP/1.0\r\nCSeq: 1 X-Evil: y\r\n\r\n", method: "PLAY"},
		{name: "CSeq too long", in: "PLAY * RTSP/1.0\r\nCSeq: 12345678901\r\n\r\n", method: "PLAY"},
		{name: "CSeq with CR", in: "PLAY * RTSP/1.0\r\nCSeq: 1\rX-Evil: y\r\n\r\n", method: "PLAY"},
		{name: "truncated", in: "PLAY * RTSP/1.0\r\nCSeq: 1\r\n", wantError: io.EOF},
		{name: "truncated body", in: "PLAY * RTSP/1.0\r\nContent-Length: 3\r\n\r\nab", wantError: io.ErrUnexpectedEOF},
		{name: "empty", in: "", wantError: io.EOF},
		{name: "interleaved", in: "$\x00\x00\x01x", wantError: errGateNotRTSP},
		{name: "bad header", in: "PLAY * RTSP/1.0\r\n: x\r\n\r\n", wantError: errGateBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.in + tc.after))
			req, err := readGateRequest(br)
			if tc.wantError != nil {
				if !errors.Is(err, tc.wantError) {
					t.Fatalf("error %v, want %v", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(req.raw) != tc.in {
				t.Fatalf("raw %q, want %q", req.raw, tc.in)
			}
			if rest, _ := io.ReadAll(br); string(rest) != tc.after {
				t.Fatalf("left %q unread, want %q", rest, tc.after)
			}
			if req.method != tc.method || req.cseq != tc.cseq || req.authorization != tc.authz {
				t.Fatalf("got method %q cseq %q authorization %q, want %q %q %q",
					req.method, req.cseq, req.authorization, tc.method, tc.cseq, tc.authz)
			}
		})
	}
}
