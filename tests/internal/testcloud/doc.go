// Package testcloud is a small stand-in for the cloud end of the tunnel, for the
// module's end-to-end tests.
//
// A [Server] is a TLS websocket endpoint on loopback with its own throw-away CA (written
// to [Server.CAFile], for the module's RTSPTUNNEL_REMOTECAFILE). Each [Session] is one
// tunnel: a wss URL and a bearer token to hand to tunnelOpen, and a local TCP listener
// that an RTSP client such as ffprobe connects to. The first TCP connection accepted there
// is spliced with the module's websocket, binary messages both ways, so that
//
//	ffprobe rtsp://<session.ListenAddr()>/stream  ->  testcloud  ==wss==>  module  ->  camera
//
// plays the camera through the module.
//
// Wire behaviour, as the design's tunnelOpen contract expects of the cloud:
//
//   - GET /tunnels/<id> with Authorization: Bearer <token> (scheme case-insensitive,
//     token compared in constant time) upgrades to a websocket (HTTP/1.1, no compression,
//     no subprotocol). Answers otherwise: 401 with WWW-Authenticate when the token is
//     missing or wrong, the status set with [Session.Refuse], 404 for an unknown session,
//     409 when the session already has its websocket (a session is single-use), 410 once
//     the session is closed.
//   - Every byte the TCP client sends goes to the module in binary messages, in order,
//     and every binary message's payload goes to the TCP client. A text message is a
//     protocol error: the session closes with 1003.
//   - The module closing the websocket closes the TCP connection; the TCP client hanging
//     up closes the websocket with 1000; [Session.Close] closes it with the given code.
//     The close frame the module sent is kept for [Session.CloseStatus].
//
// The upgrade request's headers (TunnelConnectionSource, User-Agent, ...) are recorded
// for [Session.Header]. Tokens are never logged.
package testcloud
