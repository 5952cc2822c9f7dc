package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// DialOptions configures Dial.
type DialOptions struct {
	// Token is sent as "Authorization: Bearer <Token>". It must not contain
	// control characters (the caller validates it). It never appears in errors.
	Token string

	// UserAgent is the User-Agent header; see UserAgent. Empty means UserAgent("").
	UserAgent string

	// RootCAs verifies the remote's certificate; nil means the system roots.
	RootCAs *x509.CertPool

	// HandshakeTimeout bounds the whole dial: TCP, proxy CONNECT, TLS and the
	// HTTP upgrade. Zero means only ctx bounds it.
	HandshakeTimeout time.Duration

	// Proxy selects the proxy for a request; nil means http.ProxyFromEnvironment
	// (HTTPS_PROXY, NO_PROXY, read once per process).
	Proxy func(*http.Request) (*url.URL, error)

	// DialContext dials TCP connections; nil means a net.Dialer with keepalives.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// CheckAddress, when set, is called with the endpoint's host name and
	// each address it resolves to before the module connects to the endpoint
	// directly; an error refuses the dial before any packet is sent to the
	// endpoint, and Dial returns it in its DialError's chain (see
	// AddressError). Dial then resolves the name itself (LookupNetIP) and
	// connects to the checked addresses only. Through a proxy, the proxy
	// resolves the name and CheckAddress is not called: check the URL's text
	// before Dial (ParseHostText). Nil checks nothing.
	CheckAddress func(host string, ip netip.Addr) error

	// LookupNetIP resolves the endpoint's host for CheckAddress; nil means
	// net.DefaultResolver.LookupNetIP.
	LookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// UserAgent returns the User-Agent the module sends: module name and version
// ("dev" when empty), operating system and architecture.
func UserAgent(version string) string {
	if version == "" {
		version = "dev"
	}
	return fmt.Sprintf("rtsptunnel/%s (%s; %s) azure-iot-edge-module", version, runtime.GOOS, runtime.GOARCH)
}

// DialError is returned by Dial when the websocket could not be opened.
// Its message contains neither the token nor the endpoint's query string.
type DialError struct {
	// Endpoint is the endpoint without user info, query string or fragment.
	Endpoint string
	// StatusCode is the HTTP status of a refused handshake (300..599), or 0
	// when the failure happened before or without one (DNS, TCP, proxy, TLS,
	// timeout, a 101 that violated the protocol).
	StatusCode int
	// Reason classifies the failure (a fixed set, for metrics and callers).
	Reason DialReason
	// Cause is a short sentence for the caller of tunnelOpen and the twin:
	// what failed, from the module's point of view. It holds no token, no
	// URL and no proxy credentials (see cause.go).
	Cause string
	msg   string
	err   error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("failed to open websocket to %s: %s", e.Endpoint, e.msg)
}

// Unwrap returns the underlying error. Its message may contain the endpoint's
// query string: log the DialError, not the unwrapped error.
func (e *DialError) Unwrap() error { return e.err }

// HTTPStatus returns the HTTP status of a refused websocket handshake found in
// err's chain, or 0 when there is none.
func HTTPStatus(err error) int {
	var de *DialError
	if errors.As(err, &de) {
		return de.StatusCode
	}
	return 0
}

// RedactURL returns rawURL without user info, query string and fragment
// (scheme://host/path), safe to log or report. An unparsable URL gives "".
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return r.String()
}

// Conn is a tunnel's websocket as Dial opened it.
type Conn struct {
	*websocket.Conn
	conns *trackedConns // the network connections under it
}

// Abort closes the network connection under the websocket at once, with no
// close handshake and no TLS close_notify: blocked reads and writes fail.
// Splice uses it to end a close handshake that a stalled remote holds up.
func (c *Conn) Abort() { c.conns.closeAll() }

// Dial opens the websocket to endpoint (wss://, or ws:// if the caller allows
// it) for one tunnel. The returned connection belongs to the caller, who must
// Close it or hand it to Splice. On failure the error is a *DialError, and no
// connection is left behind.
func Dial(ctx context.Context, endpoint string, opts DialOptions) (_ *Conn, err error) {
	redacted := RedactURL(endpoint)
	if opts.HandshakeTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.HandshakeTimeout)
		defer cancel()
	}
	proxy := opts.Proxy
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	dialContext := opts.DialContext
	if dialContext == nil {
		dialContext = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	// The transport asks Proxy before it dials: remember whether this dial
	// goes to a proxy, so that the address check leaves the proxy alone.
	viaProxy := new(atomic.Bool)
	proxyFunc := func(r *http.Request) (*url.URL, error) {
		u, err := proxy(r)
		if u != nil {
			viaProxy.Store(true)
		}
		return u, err
	}
	if opts.CheckAddress != nil {
		lookup := opts.LookupNetIP
		if lookup == nil {
			lookup = net.DefaultResolver.LookupNetIP
		}
		dialContext = guardDial(dialContext, lookup, opts.CheckAddress, viaProxy)
	}
	// net/http finishes a dial (and its TLS handshake) in the background after
	// the request is cancelled; track the connections so that a failed Dial
	// closes them at once instead of leaving them for the handshake timeout.
	conns := new(trackedConns)
	defer func() {
		if err != nil {
			conns.closeAll()
		}
	}()
	dialContext = conns.wrap(dialContext)
	userAgent := opts.UserAgent
	if userAgent == "" {
		userAgent = UserAgent("")
	}
	// One transport per tunnel: each websocket needs its own TCP connection
	// anyway, and with keep-alives off a refused handshake leaves no idle
	// connection (or goroutine) behind.
	proxyStatus := new(atomic.Int32) // the proxy's answer to CONNECT, 0 if none
	transport := &http.Transport{
		OnProxyConnectResponse: func(_ context.Context, _ *url.URL, _ *http.Request, res *http.Response) error {
			proxyStatus.Store(int32(res.StatusCode))
			return nil // the transport refuses a non-200 answer itself
		},
		Proxy:              proxyFunc,
		DialContext:        dialContext,
		TLSClientConfig:    &tls.Config{RootCAs: opts.RootCAs, MinVersion: tls.VersionTLS12},
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	client := &http.Client{
		// frameTransport makes each websocket frame one write; see coalesce.go.
		Transport: newFrameTransport(transport),
		// Never follow redirects: the allowed-host check was made on endpoint.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	header := http.Header{}
	header.Set("Authorization", "Bearer "+opts.Token)
	header.Set("TunnelConnectionSource", "PnpDevice")
	header.Set("User-Agent", userAgent)

	conn, resp, err := websocket.Dial(ctx, endpoint, &websocket.DialOptions{
		HTTPClient:      client,
		HTTPHeader:      header,
		CompressionMode: websocket.CompressionDisabled, // video does not compress
	})
	if err != nil {
		de := &DialError{Endpoint: redacted, msg: redactError(err, endpoint), err: err}
		if resp != nil && resp.StatusCode >= 300 && resp.StatusCode <= 599 {
			de.StatusCode = resp.StatusCode
			de.msg = fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		} else if ctxErr := ctx.Err(); ctxErr != nil {
			de.msg = "handshake timed out or was cancelled: " + de.msg
		}
		de.Reason, de.Cause = classify(err, de.StatusCode, int(proxyStatus.Load()), ctx.Err() != nil)
		return nil, de
	}
	return &Conn{Conn: conn, conns: conns}, nil
}

// redactError returns err's message with every form of endpoint's secrets (user
// info, query string, fragment) removed. The websocket and HTTP libraries format
// the request URL into their messages eagerly, so the text itself is cleaned.
func redactError(err error, endpoint string) string {
	msg := err.Error()
	u, perr := url.Parse(endpoint)
	if perr != nil {
		return "invalid endpoint"
	}
	var secrets []string
	if u.RawQuery != "" {
		secrets = append(secrets, "?"+u.RawQuery, u.RawQuery, u.Query().Encode())
	}
	if u.Fragment != "" {
		secrets = append(secrets, "#"+u.EscapedFragment(), u.Fragment)
	}
	if u.User != nil {
		secrets = append(secrets, u.User.String()+"@", u.User.String())
	}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		msg = strings.ReplaceAll(msg, s, "")
		if q := fmt.Sprintf("%q", s); len(q) > 2 {
			msg = strings.ReplaceAll(msg, q[1:len(q)-1], "") // as escaped by %q
		}
	}
	return msg
}

// trackedConns records the connections a Dial made (one, with keep-alives
// off, unless net/http retried).
type trackedConns struct {
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

func (t *trackedConns) wrap(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.closed { // the Dial already failed
			c.Close()
			return nil, net.ErrClosed
		}
		t.conns = append(t.conns, c)
		return c, nil
	}
}

// closeAll closes every tracked connection, and any made later.
func (t *trackedConns) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, c := range t.conns {
		c.Close()
	}
}
