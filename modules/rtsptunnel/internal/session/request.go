package session

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/tunnel"
)

// FailReason classifies a failed tunnelOpen for metrics (a fixed set).
type FailReason string

// The failure reasons of tunnelOpen.
const (
	FailBadRequest        FailReason = "bad_request"        // payload, endpoint, token or port invalid
	FailHostNotAllowed    FailReason = "host_not_allowed"   // remote host not in allowedRemoteHosts
	FailPortNotAvailable  FailReason = "port_not_available" // localPort not mapped to a camera
	FailTooManySessions   FailReason = "too_many_sessions"  // maxSessions reached (429)
	FailShuttingDown      FailReason = "shutting_down"      // the module is stopping (503)
	FailCameraUnreachable FailReason = "camera_unreachable" // the camera dial failed
	FailRemote            FailReason = "remote_failed"      // the websocket could not be opened
)

// FailReasons lists every FailReason, e.g. to create metric series at zero.
var FailReasons = []FailReason{FailBadRequest, FailHostNotAllowed, FailPortNotAvailable, FailTooManySessions,
	FailShuttingDown, FailCameraUnreachable, FailRemote}

// Limits on request fields, well above any real value; they keep hostile
// payloads out of logs and state.
const (
	maxEndpointLen = 4096
	maxTokenLen    = 16 << 10
)

// request is a validated tunnelOpen payload. The token is kept only here and in
// the dial options; never log or store a request.
type request struct {
	endpoint  string // as received
	redacted  string // scheme://host/path: safe to log and report
	host      string // host[:port] of the endpoint
	hostname  string // host name of the endpoint, without port or brackets
	token     string
	localPort int
	target    string // camera address to dial
}

// openError is a tunnelOpen failure: its answer, and what logs and metrics get.
type openError struct {
	status  int
	target  string
	message string
	reason  FailReason
	cause   error // for the log only; token-free
	// summarized: message already says why (the websocket's cause), so the
	// twin's lastError is the message alone, not the cause's longer text
	// that repeats the endpoint URL.
	summarized bool
}

// lastError is the text for the twin's lastError.
func (e *openError) lastError() string {
	if e.summarized {
		return e.message
	}
	return e.Error()
}

func (e *openError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s: %v", e.message, e.cause)
	}
	return e.message
}

// body returns the AVA error body {"code":"<status>","target":..,"message":..}.
func (e *openError) body() []byte {
	b, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Target  string `json:"target"`
		Message string `json:"message"`
	}{strconv.Itoa(e.status), e.target, e.message})
	return b
}

func badRequest(target, format string, args ...any) *openError {
	return &openError{status: 400, target: target, message: fmt.Sprintf(format, args...), reason: FailBadRequest}
}

// parseRequest validates a tunnelOpen payload against s, in the contract's order.
func parseRequest(payload []byte, s settings.Settings) (*request, *openError) {
	if len(bytes.TrimSpace(payload)) == 0 {
		return nil, badRequest("payload", "Payload is empty; expected a JSON object with remoteEndpoint, remoteAuthorizationToken and localPort")
	}
	if !json.Valid(payload) {
		return nil, badRequest("payload", "Payload is not valid JSON")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil || fields == nil {
		return nil, badRequest("payload", "Payload is not a JSON object")
	}
	req := &request{}

	endpoint, oerr := stringField(fields, "remoteEndpoint")
	if oerr != nil {
		return nil, oerr
	}
	u, oerr := checkEndpoint(endpoint, s.AllowInsecureWebSocket)
	if oerr != nil {
		return nil, oerr
	}
	if !settings.MatchHost(s.AllowedRemoteHosts, u.Hostname()) {
		e := badRequest("remoteEndpoint", "Remote host %q is not in allowedRemoteHosts", u.Hostname())
		e.reason = FailHostNotAllowed
		return nil, e
	}
	if e := checkHostText(u.Hostname(), s.AllowedRemoteHosts); e != nil {
		return nil, e
	}
	req.endpoint, req.redacted, req.host, req.hostname = endpoint, tunnel.RedactURL(endpoint), u.Host, u.Hostname()

	token, oerr := stringField(fields, "remoteAuthorizationToken")
	if oerr != nil {
		return nil, oerr
	}
	if err := checkToken(token); err != nil {
		return nil, err
	}
	req.token = token

	raw, ok := fields["localPort"]
	if !ok {
		return nil, badRequest("localPort", "localPort is required")
	}
	port, ok := parsePort(raw)
	if !ok {
		return nil, badRequest("localPort", "localPort must be an integer from 1 to 65535")
	}
	req.localPort = port
	target, ok := s.Target(port)
	if !ok {
		t := fmt.Sprintf("localPort:%d", port)
		if len(s.Targets) == 0 {
			t = fmt.Sprintf("127.0.0.1:%d", port)
		}
		return nil, &openError{status: 400, target: t, message: "Local port is not available", reason: FailPortNotAvailable}
	}
	req.target = target
	return req, nil
}

// checkHostText refuses, on the URL's text alone, a host that is loopback,
// link-local, unspecified, multicast or a cloud metadata service unless
// allowed names it exactly, and any non-canonical numeric host. The dial
// checks the resolved address again (see addressGuard); with a proxy, which
// resolves names itself, this text check is all the module can do.
func checkHostText(host string, allowed []string) *openError {
	ht := tunnel.ParseHostText(host)
	if ht.NonCanonical {
		e := badRequest("remoteEndpoint", "Remote host %q is a non-standard numeric form that resolvers read differently; write an IP address in dotted decimal or a DNS name", host)
		if ht.IP.IsValid() {
			e = badRequest("remoteEndpoint", "Remote host %q is a non-standard form of the IP address %s; write it as %s", host, ht.IP, ht.IP)
		}
		e.reason = FailHostNotAllowed
		return e
	}
	if ht.Rule != "" && !settings.NamesHost(allowed, host) {
		return specialHostError(host, ht.Rule)
	}
	return nil
}

// specialHostError is the answer to a host under an address rule.
func specialHostError(host string, rule tunnel.AddressRule) *openError {
	e := badRequest("remoteEndpoint", "Remote host %q is a %s address; only a host named exactly in allowedRemoteHosts may be one", host, rule)
	e.reason = FailHostNotAllowed
	return e
}

// addressGuard returns the tunnel.DialOptions.CheckAddress of a call: an
// address under an address rule is refused unless allowed names the host
// exactly (wildcards do not count).
func addressGuard(allowed []string) func(host string, ip netip.Addr) error {
	return func(host string, ip netip.Addr) error {
		if r := tunnel.ClassifyAddress(ip); r != "" && !settings.NamesHost(allowed, host) {
			return &tunnel.AddressError{Host: host, IP: ip, Rule: r}
		}
		return nil
	}
}

// stringField returns a required string field.
func stringField(fields map[string]json.RawMessage, name string) (string, *openError) {
	raw, ok := fields[name]
	if !ok {
		return "", badRequest(name, "%s is required", name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || string(bytes.TrimSpace(raw)) == "null" {
		return "", badRequest(name, "%s must be a string", name)
	}
	return s, nil
}

// checkEndpoint accepts only an absolute wss:// (or, when allowed, ws://) URL
// with a valid host and no user info or fragment.
func checkEndpoint(endpoint string, allowInsecure bool) (*url.URL, *openError) {
	const target = "remoteEndpoint"
	if endpoint == "" {
		return nil, badRequest(target, "remoteEndpoint must not be empty")
	}
	if len(endpoint) > maxEndpointLen {
		return nil, badRequest(target, "remoteEndpoint is longer than %d bytes", maxEndpointLen)
	}
	want := "an absolute wss:// URL"
	if allowInsecure {
		want = "an absolute wss:// or ws:// URL"
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, badRequest(target, "remoteEndpoint must be %s", want)
	}
	switch {
	case u.Scheme == "ws" && !allowInsecure:
		return nil, badRequest(target, "remoteEndpoint must be an absolute wss:// URL; ws:// is not allowed (see allowInsecureWebSocket)")
	case u.Scheme != "wss" && u.Scheme != "ws", u.Opaque != "":
		return nil, badRequest(target, "remoteEndpoint must be %s", want)
	case u.User != nil:
		return nil, badRequest(target, "remoteEndpoint must not contain user information")
	case u.Fragment != "" || bytes.ContainsRune([]byte(endpoint), '#'):
		return nil, badRequest(target, "remoteEndpoint must not contain a fragment")
	case u.Hostname() == "" || !settings.ValidHostName(u.Hostname()):
		return nil, badRequest(target, "remoteEndpoint must have a valid host name")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, badRequest(target, "remoteEndpoint has an invalid port")
		}
	}
	// url.Parse accepts spaces and non-ASCII bytes in paths, which no valid URL
	// contains (RFC 3986: percent-encode them); refuse them rather than dial a
	// URL that differs from what the caller sent.
	for i := 0; i < len(endpoint); i++ {
		if c := endpoint[i]; c <= ' ' || c >= 0x7f {
			return nil, badRequest(target, "remoteEndpoint must be %s of visible ASCII characters (percent-encode others)", want)
		}
	}
	return u, nil
}

// checkToken accepts a non-empty token of visible ASCII (what bearer tokens
// and JWTs are made of), so it cannot inject header lines.
func checkToken(token string) *openError {
	const target = "remoteAuthorizationToken"
	if token == "" {
		return badRequest(target, "remoteAuthorizationToken must not be empty")
	}
	if len(token) > maxTokenLen {
		return badRequest(target, "remoteAuthorizationToken is longer than %d bytes", maxTokenLen)
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return badRequest(target, "remoteAuthorizationToken contains characters not allowed in an HTTP header")
		}
	}
	return nil
}

// parsePort accepts a JSON integer literal 1..65535 (not 554.0, "554" or 5.54e2).
func parsePort(raw json.RawMessage) (int, bool) {
	s := string(bytes.TrimSpace(raw))
	if s == "" || len(s) > 5 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 1 && n <= 65535 && strconv.Itoa(n) == s
}
