package core

import (
	"encoding/json"
	"strings"
	"unicode"
)

// Causes of a tunnelOpen the module refused, the values of
// relay_module_open_failures_total's cause label. They follow the module's
// error messages: its websocket failures end with a cause sentence
// ("Could not open the websocket to remoteEndpoint: the proxy refused
// CONNECT: 403 Forbidden"), whose start names the cause.
const (
	CauseProxyAuth        = "proxy_auth"         // the module's proxy answered CONNECT with 407
	CauseProxyRefused     = "proxy_refused"      // the module's proxy refused CONNECT (403, 502, ...)
	CauseProxyUnreachable = "proxy_unreachable"  // the module could not connect to its proxy
	CauseTLS              = "tls"                // the relay's certificate did not verify on the module
	CauseTimeout          = "timeout"            // the websocket handshake timed out
	CauseDNS              = "dns"                // the module could not resolve the relay's name
	CauseRefused          = "refused"            // the relay's address refused the connection
	CauseHTTPStatus       = "http_status"        // the relay (or something in front of it) answered the upgrade with an HTTP error
	CauseHandshake        = "handshake"          // the answer was not a websocket handshake
	CauseNetwork          = "network"            // another network error
	CauseAddress          = "address_refused"    // the relay's host or address is not allowed by the module (allowedRemoteHosts)
	CauseCamera           = "camera_unreachable" // the module could not connect to the camera
	CauseLimit            = "too_many_sessions"  // the module's maxSessions (429)
	CauseShuttingDown     = "shutting_down"      // the module is stopping (503)
	CauseBadRequest       = "bad_request"        // another 400: payload, token or port refused
	CauseOther            = "other"              // anything else, e.g. a module that gives no cause
)

// Causes lists every cause label.
var Causes = []string{CauseProxyAuth, CauseProxyRefused, CauseProxyUnreachable, CauseTLS, CauseTimeout, CauseDNS,
	CauseRefused, CauseHTTPStatus, CauseHandshake, CauseNetwork, CauseAddress, CauseCamera, CauseLimit,
	CauseShuttingDown, CauseBadRequest, CauseOther}

// websocketPrefix starts the module's message for a failed websocket.
const websocketPrefix = "Could not open the websocket to remoteEndpoint"

// causePrefixes map the start of the module's cause sentence to a label, in
// the order they are tried.
var causePrefixes = []struct{ prefix, cause string }{
	{"the proxy refused CONNECT: 407", CauseProxyAuth},
	{"the proxy refused CONNECT", CauseProxyRefused},
	{"could not connect to the proxy", CauseProxyUnreachable},
	{"TLS certificate verification failed", CauseTLS},
	{"the websocket handshake timed out", CauseTimeout},
	{"DNS lookup of", CauseDNS},
	{"the endpoint refused the connection", CauseRefused},
	{"the endpoint answered HTTP", CauseHTTPStatus},
	{"the endpoint's answer was not a websocket handshake", CauseHandshake},
	{"the endpoint's address is not allowed", CauseAddress},
	{"network error", CauseNetwork},
}

// maxCauseText bounds the cause text the relay logs from a module's answer.
const maxCauseText = 300

// moduleCause reads a module's error answer to tunnelOpen
// ({"code","target","message"}) and returns a cause label from [Causes] and
// the message, shortened and stripped of control characters for the log
// (the module's message carries no secrets; a foreign module's might carry
// anything, so it is only logged, never used as a label).
func moduleCause(status int, body []byte) (cause, text string) {
	var b struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &b) // a body that is not the AVA shape gives no message
	text = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, b.Message)
	if len(text) > maxCauseText {
		text = text[:maxCauseText] + "..."
	}
	switch {
	case status == 429:
		return CauseLimit, text
	case status == 503:
		return CauseShuttingDown, text
	case strings.HasPrefix(b.Message, "Could not connect to RTSP endpoint"):
		return CauseCamera, text
	case strings.HasPrefix(b.Message, "Remote host "):
		return CauseAddress, text
	case strings.HasPrefix(b.Message, websocketPrefix):
		rest := strings.TrimPrefix(strings.TrimPrefix(b.Message, websocketPrefix), ": ")
		for _, p := range causePrefixes {
			if strings.HasPrefix(rest, p.prefix) {
				return p.cause, text
			}
		}
		if status >= 300 && status <= 599 && status != 502 {
			return CauseHTTPStatus, text // a module that gives no cause but the relay's status
		}
		return CauseOther, text
	case status == 400:
		return CauseBadRequest, text
	}
	return CauseOther, text
}
