// Package session answers the tunnelOpen direct method and owns the live
// tunnels.
//
// A [Manager] validates each call, dials the camera mapped to localPort, opens
// the websocket to remoteEndpoint and, once both are up, answers 200 and runs
// the tunnel ([tunnel.Splice]) in its own goroutine until either side closes.
//
// # tunnelOpen wire contract (DESIGN section 3)
//
// Request: {"remoteEndpoint":"wss://...","remoteAuthorizationToken":"...","localPort":554};
// unknown fields are ignored. Checks, in order, each answering
// 400 {"code":"400","target":"<what>","message":"<why>"}:
//
//	payload                  empty, not JSON, or not an object           target "payload"
//	remoteEndpoint           missing, not a string, not an absolute       target "remoteEndpoint"
//	                         wss:// URL of visible ASCII (ws:// only with
//	                         allowInsecureWebSocket), user info,
//	                         fragment, empty or invalid host or port
//	                         host not in allowedRemoteHosts              target "remoteEndpoint"
//	                         host text loopback, link-local,             target "remoteEndpoint"
//	                         unspecified, multicast or cloud metadata
//	                         and not named exactly in allowedRemoteHosts;
//	                         a non-standard numeric host (2130706433)
//	remoteAuthorizationToken missing, not a string, empty, or with       target "remoteAuthorizationToken"
//	                         characters other than visible ASCII
//	                         (header injection)
//	localPort                not a JSON integer in 1..65535              target "localPort"
//	                         not mapped: "Local port is not available"   target "127.0.0.1:<port>" (no targets
//	                                                                     configured) or "localPort:<port>"
//
// Then: 503 while shutting down; 429 at maxSessions (tunnels being opened
// count; existing tunnels are untouched); 400 "Could not connect to RTSP
// endpoint" (target: the camera address) when the camera dial fails; 400
// (target "remoteEndpoint") when an address the endpoint's host resolves to
// falls under the same rules (checked on the address dialled; through a
// proxy, which resolves the name, only the text check applies); and when the
// websocket fails, the handshake's HTTP status (502 when there was none) with
// target = the endpoint without query string. Success: 200
// {"sessionId":"<uuid>","target":"<camera host:port>"}. The module never
// retries; the caller does. The token never appears in logs, errors, reported
// state or metrics.
//
// # Concurrency and settings
//
// HandleTunnelOpen is safe for concurrent use: no lock is held while dialling,
// so a hanging camera never delays other calls, and every call answers within
// openTimeout. [Manager.SetSettings] applies new settings to later calls; each
// tunnel keeps the settings snapshot it was opened with (timeouts, pings), so a
// change never disturbs a running stream. Closed sessions stay visible in
// [Manager.Snapshot] for sessionRetention (as of the snapshot).
//
// # Logs
//
// One "session opened" line per tunnel and exactly one "session closed" line
// (outcome, duration, bytes each way); a failed call logs "session open failed"
// once, with its reason. The logger is passed in.
package session
