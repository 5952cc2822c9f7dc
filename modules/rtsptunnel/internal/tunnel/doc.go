// Package tunnel is the data path of one RTSP tunnel: it dials the remote
// websocket ([Dial]) and copies bytes between a camera's TCP connection and that
// websocket ([Splice]).
//
// # Wire contract
//
// The websocket upgrade request carries
//
//	Authorization: Bearer <token>
//	TunnelConnectionSource: PnpDevice
//	User-Agent: rtsptunnel/<version> (<GOOS>; <GOARCH>) azure-iot-edge-module
//
// and goes through HTTPS_PROXY/NO_PROXY when set. Redirects are not followed
// (a redirect could lead the bearer token past the allowed-host check) and
// compression is not negotiated (video does not compress).
//
// Once open, every websocket message is a binary message carrying the next
// bytes of the camera's TCP stream, unchanged and in order, in both directions.
// Message boundaries carry no meaning. Close codes:
//
//	1000 normal closure  the camera closed its connection (EOF), or the idle
//	                     timeout or the maximum session duration ended the tunnel
//	1001 going away      the module is shutting down
//	1003 unsupported     the remote sent a text message
//	1011 internal error  the camera connection failed (reset, write error)
//
// A close frame from the remote (any code) closes the camera connection. A
// remote that does not answer pings within the ping timeout is a dead peer:
// the tunnel ends without a close handshake.
//
// # Bounded memory
//
// Each direction has exactly one reader and one writer and at most one pooled
// 32 KiB buffer, taken only while bytes are moving: a tunnel waiting for the
// camera or the remote holds none. Nothing is queued. A peer that stops
// reading stalls the opposite side's reads (TCP backpressure) instead of
// growing memory, and never affects other tunnels.
//
// Each websocket frame leaves in one write (see frameWriter), not in the
// websocket library's 4 KiB pieces.
//
// The token is a secret: it is sent only in the Authorization header and never
// appears in errors (endpoints in errors are redacted to scheme://host/path).
//
// # Where a tunnel may go (guard.go)
//
// The caller (the session manager) decides which hosts are allowed; this
// package supplies the facts. [ParseHostText] reads a URL's host name on its
// own: IP literals in every spelling (decimal, octal, hex and short IPv4,
// IPv4-mapped and NAT64 IPv6), localhost names and cloud metadata names.
// [ClassifyAddress] puts an address under an [AddressRule] (loopback,
// link-local, unspecified, multicast, cloud metadata). With
// DialOptions.CheckAddress set, Dial resolves the endpoint's name itself,
// checks every address and connects only to the checked ones, so that the
// address checked is the address dialled (no second lookup for DNS rebinding
// to exploit). Through a proxy the proxy resolves the name and connects; the
// module dials only the proxy, which the operator chose, so only the URL's
// text can be checked.
//
// # Why a dial failed (cause.go)
//
// A [DialError] carries a Reason from a fixed set and a Cause sentence for the
// caller of tunnelOpen and the twin ("the proxy refused CONNECT: 407 Proxy
// Authentication Required ..."). The cause is built from fixed phrases and
// fields that hold no secrets (a status, an errno, an x509 message, a host
// name), never from the error's text, which net/http fills with the request
// URL; the proxy's answer to CONNECT is read through
// http.Transport.OnProxyConnectResponse, as net/http's own error is only the
// status text.
package tunnel
