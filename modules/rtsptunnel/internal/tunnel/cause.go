package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
)

// DialReason classifies why Dial failed. The set is fixed (a metric label);
// the relay maps the start of [DialError.Cause] back to it.
type DialReason string

// The reasons of a failed Dial, each with the start of its Cause.
const (
	ReasonHTTPStatus       DialReason = "http_status"       // "the endpoint answered HTTP 401 Unauthorized"
	ReasonProxyAuth        DialReason = "proxy_auth"        // "the proxy refused CONNECT: 407 Proxy Authentication Required ..."
	ReasonProxyRefused     DialReason = "proxy_refused"     // "the proxy refused CONNECT: 403 Forbidden"
	ReasonProxyUnreachable DialReason = "proxy_unreachable" // "could not connect to the proxy: connection refused"
	ReasonTLS              DialReason = "tls"               // "TLS certificate verification failed: x509: ..."
	ReasonTimeout          DialReason = "timeout"           // "the websocket handshake timed out"
	ReasonDNS              DialReason = "dns"               // "DNS lookup of relay.example.com failed: no such host"
	ReasonRefused          DialReason = "refused"           // "the endpoint refused the connection"
	ReasonAddress          DialReason = "address_refused"   // "the endpoint's address is not allowed: ..."
	ReasonHandshake        DialReason = "handshake"         // "the endpoint's answer was not a websocket handshake"
	ReasonNetwork          DialReason = "network"           // "network error: connection reset by peer"
)

// maxCause bounds a Cause; x509 messages can list many names.
const maxCause = 200

// classify finds why a websocket dial failed. statusCode is the endpoint's
// refusing HTTP status (0 if none), proxyStatus the proxy's answer to
// CONNECT (0 if none), timedOut whether the dial's context ended.
//
// The cause is built from fixed phrases and a few fields known to hold no
// secrets (a status text, an errno, an x509 verification message, a host
// name), never from the error's whole text: net/http puts the request URL,
// and with it a signed query string, into its messages, and a proxy URL may
// carry credentials.
func classify(err error, statusCode, proxyStatus int, timedOut bool) (DialReason, string) {
	var (
		addrErr *AddressError
		verErr  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
		opErr   *net.OpError
		dnsErr  *net.DNSError
		errno   syscall.Errno
	)
	var reason DialReason
	var cause string
	switch {
	case statusCode != 0:
		reason, cause = ReasonHTTPStatus, fmt.Sprintf("the endpoint answered HTTP %d %s", statusCode, http.StatusText(statusCode))
	case proxyStatus == http.StatusProxyAuthRequired:
		reason, cause = ReasonProxyAuth, "the proxy refused CONNECT: 407 Proxy Authentication Required (check the credentials in HTTPS_PROXY)"
	case proxyStatus != 0 && proxyStatus != http.StatusOK:
		reason, cause = ReasonProxyRefused, fmt.Sprintf("the proxy refused CONNECT: %d %s", proxyStatus, http.StatusText(proxyStatus))
	case errors.As(err, &addrErr):
		reason, cause = ReasonAddress, "the endpoint's address is not allowed: "+addrErr.Error()
	case errors.As(err, &verErr):
		reason, cause = ReasonTLS, "TLS certificate verification failed: "+verErr.Err.Error()
	case errors.As(err, &unknown), errors.As(err, &host), errors.As(err, &invalid):
		var e error = unknown
		if host.Certificate != nil {
			e = host
		} else if invalid.Cert != nil {
			e = invalid
		}
		reason, cause = ReasonTLS, "TLS certificate verification failed: "+e.Error()
	case errors.As(err, &opErr) && opErr.Op == "proxyconnect":
		reason, cause = ReasonProxyUnreachable, "could not connect to the proxy: "+shortNetError(opErr.Err, timedOut)
	case timedOut || errors.Is(err, os.ErrDeadlineExceeded):
		reason, cause = ReasonTimeout, "the websocket handshake timed out (handshakeTimeout or openTimeout)"
	case errors.As(err, &dnsErr):
		reason, cause = ReasonDNS, fmt.Sprintf("DNS lookup of %s failed: %s", dnsErr.Name, dnsErr.Err)
	case errors.Is(err, syscall.ECONNREFUSED):
		reason, cause = ReasonRefused, "the endpoint refused the connection"
	case errors.As(err, &errno):
		reason, cause = ReasonNetwork, "network error: "+errno.Error()
	case errors.As(err, &opErr):
		reason, cause = ReasonNetwork, "network error: "+shortNetError(opErr.Err, timedOut)
	default:
		reason, cause = ReasonHandshake, "the endpoint's answer was not a websocket handshake"
	}
	if len(cause) > maxCause {
		cause = cause[:maxCause] + "..."
	}
	return reason, cause
}

// shortNetError names a network failure by its errno or kind, not its text.
func shortNetError(err error, timedOut bool) string {
	var errno syscall.Errno
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("DNS lookup of %s failed: %s", dnsErr.Name, dnsErr.Err)
	case errors.As(err, &errno):
		return errno.Error()
	case timedOut || errors.Is(err, os.ErrDeadlineExceeded):
		return "timed out"
	}
	return "network error"
}
