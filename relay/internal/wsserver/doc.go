// Package wsserver is the thin HTTP adapter between modules' websockets and
// the relay's core: it serves GET <prefix>/tunnels/<session id>, hands the
// bearer token to the core, upgrades only when the core accepts it, and
// wraps the websocket as a net.Conn.
//
// HTTP contract:
//
//	GET <prefix>/tunnels/<session id>
//	Authorization: Bearer <token>              required
//	TunnelConnectionSource: PnpDevice          logged, not required
//	→ 101 Switching Protocols, then binary messages carry the RTSP byte stream
//	→ 401 Unauthorized (body "unauthorized") for a missing, wrong, reused or
//	  expired token or an unknown or finished session, nothing else
//	→ 404 for any other path
//
// Once upgraded, the relay sends a ping every Handler.PingInterval (when
// set) and expects the pong within Handler.PingTimeout; a module that misses
// one is considered gone and its TCP connection is closed without a close
// frame (nothing could deliver one). Modules answer pings as RFC 6455
// requires; coder/websocket and browsers do so while reading.
//
// Close codes sent to the module: 1000 when the tunnel ends normally (the
// player hung up), 1001 when the relay shuts down.
package wsserver
