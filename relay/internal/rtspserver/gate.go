package rtspserver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/auth"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
)

// The gate's wire contract, for a passthrough camera that is not open
// (see Gate for what "open" means). Before admission the gate, not the
// camera, answers every request on the connection:
//
//	OPTIONS                                → 200, Public: <gatePublic>
//	source address over the failure limit  → 503 + Retry-After, close (credentials not checked)
//	no, stale or bad credentials           → 401 with the Verifier's challenge(s); next request
//	valid user not in Users                → 403, close
//	valid user in Users                    → admitted: nothing answered, the request goes to the camera
//	header over gateMaxHeader, bad header line, body over gateMaxBody → 400, close
//	not an RTSP/1.0 request at all         → close without answering
//
// Every answer has this shape, CSeq copied only when the request's CSeq is
// a plain number, and no other request value echoed:
//
//	RTSP/1.0 <code> <reason>\r\n
//	CSeq: <cseq>\r\n
//	Server: rtsptunnel-relay\r\n
//	[Public: ... | Retry-After: <s> | WWW-Authenticate: <challenge>]*\r\n
//	Content-Length: 0\r\n
//	\r\n
const (
	// gateDefaultTimeout bounds the exchange before admission.
	gateDefaultTimeout = 30 * time.Second
	// gateMaxHeader bounds a request's line and headers. Requests with
	// Digest credentials are well under 1 KiB.
	gateMaxHeader = 16 << 10
	// gateMaxBody bounds a request body (SET_PARAMETER, ANNOUNCE); players
	// rarely send one before DESCRIBE.
	gateMaxBody = 64 << 10
	// gateMaxChallenges is how many 401s one connection gets before the
	// gate hangs up. A player needs one (no credentials yet), sometimes two
	// (stale nonce); more means it keeps guessing.
	gateMaxChallenges = 5
	// gateMaxRequests bounds the requests answered on one connection
	// before admission, OPTIONS included, so that a player cannot keep a
	// connection busy with OPTIONS until the timeout.
	gateMaxRequests = 16
	// gatePublic is the OPTIONS answer: what a passthrough camera is
	// expected to support, so that players go on to DESCRIBE.
	gatePublic = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER"
	// gateServer is the Server header of the gate's answers.
	gateServer = "rtsptunnel-relay"
)

// Gate authenticates a passthrough player's connection before its tunnel
// opens: it reads RTSP requests, answers those that lack valid credentials
// itself (401 with a challenge, 403 for a user not allowed, 503 +
// Retry-After when the source address is rate limited, 200 to OPTIONS with
// "Public: OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER"),
// and admits the connection at the first request that carries credentials
// for a user allowed on the camera. The rules are the shared cameras' (see
// [Server] and the package documentation): rate limit first, then
// [auth.Verifier.Check], then the camera's user list.
//
// OPTIONS is always answered by the gate before admission, without looking
// at credentials, like the RTSP server does for shared cameras; every other
// method (DESCRIBE, but also SETUP, GET_PARAMETER, TEARDOWN ...) needs
// credentials. After admission the gate is out of the way: everything,
// OPTIONS included, goes to the camera.
//
// The admitted request is forwarded unchanged, its Authorization header
// included. The camera ignores credentials for a realm it did not issue (a
// camera with its own authentication answers 401 with its own challenge,
// and the player answers that as usual). Stripping the header would be
// possible, since Content-Length counts only the body, but forwarding the
// bytes as received keeps the gate from rewriting the player's stream.
// RTSP over HTTP tunnelling is not an RTSP request and is refused unless
// the camera is open.
//
// Set the fields before use and do not change them afterwards; Admit is
// safe for concurrent use.
type Gate struct {
	// Camera names the camera, for logs.
	Camera string
	// Users may watch: user names, or "*" for every user. Empty with
	// AllowAnonymous means the camera is open: Admit checks nothing.
	// Empty without AllowAnonymous admits nobody (every valid user gets
	// 403).
	Users          []string
	AllowAnonymous bool
	// Verifier checks credentials and issues challenges; Limiter bounds
	// failures per source address. Both are required unless the camera is
	// open.
	Verifier *auth.Verifier
	Limiter  *auth.Limiter
	// Metrics counts refusals (relay_rtsp_refused_total); nil counts
	// nothing.
	Metrics *metrics.Metrics
	// Logger receives refusals (WARN) and admissions (INFO); nil discards.
	// Lines carry camera and player; never a password or an Authorization
	// header.
	Logger *slog.Logger
	// Timeout bounds the whole exchange before admission (default 30s): a
	// player that sends nothing, or does not read the answers, is dropped.
	Timeout time.Duration
}

// open reports whether the camera lets anyone in without credentials.
func (g *Gate) open() bool { return g.AllowAnonymous && len(g.Users) == 0 }

// Admit runs the exchange on conn (secure: it is a TLS connection) and
// returns a net.Conn that replays the admitted request and anything read
// after it, then continues with conn, so the camera sees the player's bytes
// from the admitted request on, unchanged. Closing the returned conn closes
// conn. On error the caller closes conn; Admit has already answered the
// player if it could.
//
// Admit blocks until the player is admitted or refused, at most Timeout.
// It sets conn's read and write deadlines for the exchange (write too, so
// that a player that does not read the answers cannot block it) and
// clears both before returning the admitted conn; on error they are left
// set.
//
// For an open camera Admit returns conn itself at once, reading nothing:
// the relay then behaves as it did without a gate (the tunnel opens while
// the player's first request is on its way, and a player that is not
// speaking RTSP is the camera's business), and the camera needs no replay.
// Timeout does not apply then.
//
// Errors from reading the player wrap the read error (io.EOF when it hung
// up, os.ErrDeadlineExceeded after Timeout). A Gate without a Verifier or
// a Limiter for a camera that is not open fails at once, answering nothing.
func (g *Gate) Admit(conn net.Conn, secure bool) (net.Conn, error) {
	if g.open() {
		return conn, nil
	}
	if g.Verifier == nil || g.Limiter == nil {
		return nil, errors.New("rtspserver: a Gate needs a Verifier and a Limiter unless the camera is open")
	}
	log := g.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("camera", g.Camera, "player", conn.RemoteAddr().String())
	var remote netip.Addr
	if ap, err := netip.ParseAddrPort(conn.RemoteAddr().String()); err == nil {
		remote = ap.Addr().Unmap()
	}
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = gateDefaultTimeout
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("failed to set the deadline: %w", err)
	}

	br := bufio.NewReader(conn)
	challenges := 0
	for range gateMaxRequests {
		req, err := readGateRequest(br)
		if err != nil {
			if errors.Is(err, errGateBadRequest) {
				// Best effort: the connection is closed either way.
				_ = writeGateResponse(conn, 400, "Bad Request", "")
			}
			return nil, err
		}

		if req.method == "OPTIONS" {
			if err := writeGateResponse(conn, 200, "OK", req.cseq, "Public: "+gatePublic); err != nil {
				return nil, err
			}
			continue
		}

		if !g.Limiter.Allowed(remote) {
			wait := g.Limiter.RetryAfter(remote)
			log.Debug("authentication rate limited", "retry_after", wait.String())
			g.refused(metrics.RefusedRateLimited)
			_ = writeGateResponse(conn, 503, "Service Unavailable", req.cseq,
				"Retry-After: "+strconv.Itoa(int(wait.Seconds())+1))
			return nil, errors.New("rtspserver: the player's address is rate limited")
		}

		user, err := g.Verifier.Check(req.method, req.uri, req.authorization, secure)
		stale := false
		switch {
		case err == nil:
			if !allows(g.Users, user) {
				log.Warn("player refused: user may not watch this camera", "user", user)
				g.refused(metrics.RefusedForbidden)
				_ = writeGateResponse(conn, 403, "Forbidden", req.cseq)
				return nil, fmt.Errorf("rtspserver: user %q may not watch camera %s", user, g.Camera)
			}
			if err := conn.SetDeadline(time.Time{}); err != nil {
				return nil, fmt.Errorf("failed to clear the deadline: %w", err)
			}
			log.Info("player authenticated", "user", user, "method", req.method)
			// Peek cannot fail for what is already buffered.
			rest, _ := br.Peek(br.Buffered())
			return &replayConn{Conn: conn, buf: append(req.raw, rest...)}, nil
		case errors.Is(err, auth.ErrNoCredentials):
			// The usual first step: the player learns the challenge.
		case errors.Is(err, auth.ErrStale):
			stale = true
		default:
			limited := g.Limiter.Failed(remote)
			log.Warn("authentication failed", "user", auth.UserOf(err), "path", gatePath(req.uri), "method", req.method, "error", err.Error(), "rate_limited", limited)
			g.refused(metrics.RefusedBadCredentials)
		}
		challenge := g.Verifier.Challenge(secure, stale)
		extra := make([]string, len(challenge))
		for i, c := range challenge {
			extra[i] = "WWW-Authenticate: " + c
		}
		if err := writeGateResponse(conn, 401, "Unauthorized", req.cseq, extra...); err != nil {
			return nil, err
		}
		if challenges++; challenges >= gateMaxChallenges {
			log.Debug("player refused: too many authentication attempts", "attempts", challenges)
			return nil, fmt.Errorf("rtspserver: no valid credentials after %d attempts", challenges)
		}
	}
	return nil, fmt.Errorf("rtspserver: not authenticated after %d requests", gateMaxRequests)
}

// gatePath is the path of a request URI for logs, like the RTSP server's
// "path" attribute: without user info or query, which may hold secrets.
func gatePath(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return ""
	}
	return u.Path
}

func (g *Gate) refused(reason string) {
	if g.Metrics != nil {
		g.Metrics.Refused.WithLabelValues(reason).Inc()
	}
}

// replayConn is the admitted connection: it returns buf first, then reads
// from Conn. Buffered bytes are returned even after a read deadline has
// passed (as tls.Conn does with decrypted data); deadlines apply to the
// reads from Conn. Every other method is Conn's.
type replayConn struct {
	net.Conn
	mu  sync.Mutex
	buf []byte // guarded by mu: bytes read by the gate, not yet returned
}

func (c *replayConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		if len(c.buf) == 0 {
			c.buf = nil
		}
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

var (
	// errGateNotRTSP: the player's bytes are not an RTSP/1.0 request (an
	// HTTP request, interleaved '$' data, a TLS handshake on the plain
	// port). Not answered: the player would not understand.
	errGateNotRTSP = errors.New("rtspserver: not an RTSP request")
	// errGateBadRequest: an RTSP request the gate refuses to parse
	// further (too large, bad header line, bad Content-Length). Answered
	// 400.
	errGateBadRequest = errors.New("rtspserver: bad RTSP request")
)

// gateRequest is what the gate needs of one request.
type gateRequest struct {
	method, uri   string
	cseq          string // "" unless the CSeq header is a plain number
	authorization string // the first Authorization header
	raw           []byte // the request as received, body included
}

// readGateRequest reads one request from br: request line, headers up to
// an empty line (lines may end in \r\n or \n; a line starting with a space
// or tab continues the previous header), and Content-Length bytes of body.
func readGateRequest(br *bufio.Reader) (*gateRequest, error) {
	// RTSP methods are upper-case tokens. Looking at the first byte
	// refuses '$' interleaved data, a TLS ClientHello (0x16) or other
	// binary at once, without waiting for a line end that may never come.
	first, err := br.Peek(1)
	if err != nil {
		return nil, fmt.Errorf("failed to read the request: %w", err)
	}
	if first[0] < 'A' || first[0] > 'Z' {
		return nil, errGateNotRTSP
	}

	var raw []byte
	line, raw, err := readGateLine(br, raw)
	switch {
	case errors.Is(err, errGateBadRequest):
		return nil, errGateNotRTSP // a 16 KiB first line is no RTSP request line
	case err != nil:
		return nil, err
	}
	parts := strings.Split(string(line), " ")
	if len(parts) != 3 || !isGateToken(parts[0]) || !isGateURI(parts[1]) || parts[2] != "RTSP/1.0" {
		return nil, errGateNotRTSP
	}
	req := &gateRequest{method: parts[0], uri: parts[1]}

	var (
		values        = map[string]string{}
		last          string // lower-case name of the previous header if its value counts, for continuations
		seen          bool   // a header line came before
		contentLength = -1
	)
	for {
		line, raw, err = readGateLine(br, raw)
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if !seen {
				return nil, fmt.Errorf("%w: continuation without a header", errGateBadRequest)
			}
			if last != "" {
				values[last] += " " + strings.Trim(string(line), " \t")
			}
			continue
		}
		name, value, ok := strings.Cut(string(line), ":")
		if !ok || !isGateToken(name) {
			return nil, fmt.Errorf("%w: malformed header line", errGateBadRequest)
		}
		name, value = strings.ToLower(name), strings.Trim(value, " \t")
		if name == "content-length" {
			n, err := strconv.Atoi(value)
			if err != nil || n < 0 || strings.ContainsAny(value, "+-") || (contentLength >= 0 && n != contentLength) {
				return nil, fmt.Errorf("%w: bad Content-Length", errGateBadRequest)
			}
			if n > gateMaxBody {
				return nil, fmt.Errorf("%w: body over %d bytes", errGateBadRequest, gateMaxBody)
			}
			contentLength = n
		}
		seen, last = true, ""
		if _, dup := values[name]; !dup {
			// The first value counts, as in the RTSP server.
			values[name] = value
			last = name
		}
	}
	if contentLength > 0 {
		start := len(raw)
		raw = append(raw, make([]byte, contentLength)...)
		if _, err := io.ReadFull(br, raw[start:]); err != nil {
			return nil, fmt.Errorf("failed to read the request body: %w", err)
		}
	}
	req.raw = raw
	req.authorization = values["authorization"]
	if cseq := values["cseq"]; len(cseq) <= 10 && isGateDigits(cseq) {
		req.cseq = cseq
	}
	return req, nil
}

// readGateLine appends the next line, terminator included, to raw and
// returns it without the terminator. It fails with errGateBadRequest when
// raw would exceed gateMaxHeader.
func readGateLine(br *bufio.Reader, raw []byte) (line, rawOut []byte, err error) {
	start := len(raw)
	for {
		chunk, err := br.ReadSlice('\n')
		if len(raw)+len(chunk) > gateMaxHeader {
			return nil, raw, fmt.Errorf("%w: header over %d bytes", errGateBadRequest, gateMaxHeader)
		}
		raw = append(raw, chunk...)
		switch {
		case err == nil:
			line = bytes.TrimSuffix(raw[start:len(raw)-1], []byte("\r"))
			return line, raw, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if len(raw) >= gateMaxHeader {
				// Whatever comes next makes the line too long; do not
				// wait for it.
				return nil, raw, fmt.Errorf("%w: header over %d bytes", errGateBadRequest, gateMaxHeader)
			}
		default:
			return nil, raw, fmt.Errorf("failed to read the request: %w", err)
		}
	}
}

// isGateToken reports whether s is a non-empty RFC 2616 token (a method or
// header name).
func isGateToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// isGateURI reports whether s can be a request URI: non-empty, printable
// ASCII, no spaces.
func isGateURI(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func isGateDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// writeGateResponse writes one answer without a body. cseq must be a plain
// number or ""; extra are complete header lines without line end, built
// from constants and the Verifier's challenges only.
func writeGateResponse(w io.Writer, code int, reason, cseq string, extra ...string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "RTSP/1.0 %d %s\r\n", code, reason)
	if cseq != "" {
		b.WriteString("CSeq: " + cseq + "\r\n")
	}
	b.WriteString("Server: " + gateServer + "\r\n")
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("failed to answer the player: %w", err)
	}
	return nil
}
