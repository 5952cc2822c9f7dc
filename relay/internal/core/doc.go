// Package core pairs a player's TCP connection with a module's websocket
// connection. It never listens: the RTSP front end hands it player
// connections ([Server.HandlePlayer]) and the websocket adapter hands it
// module connections ([Server.AcceptModule]), so tests drive it with
// in-memory connections such as net.Pipe.
//
// Session flow, one per player connection:
//
//	player connects ─► HandlePlayer: mint session id + single-use token,
//	                   call Opener.OpenTunnel (tunnelOpen) concurrently,
//	                   keep reading the player into a bounded buffer
//	module dials ─────► AcceptModule: redeem token (else token.ErrInvalid,
//	                   HTTP 401), upgrade, attach the conn to the session
//	attached ─────────► splice: buffered bytes first, then player ⇄ module,
//	                   until either side ends; both are then closed
//
// A session fails when the method reports a failure, the module does not
// connect within SessionWait, the player hangs up, or the relay shuts down.
// The player is then answered "RTSP/1.0 503 Service Unavailable" if it has
// sent a complete RTSP request (see rtsp.go) and disconnected; no byte of a
// camera ever reached it. Each session logs "session closed" exactly once
// with its outcome (see metrics.Outcomes) and, for method failures, the
// method's status and body. The token never appears in logs.
//
// Ownership: HandlePlayer owns and closes the player conn. After a
// successful attach the session owns and closes the module conn; the
// goroutine in AcceptModule only waits for the session to end.
package core
