// Package token mints and checks the relay's per-session bearer tokens.
//
// A session token authorizes exactly one websocket from a module: the relay
// mints it when a player connects, passes it to the module in the tunnelOpen
// direct method (remoteAuthorizationToken), and the module presents it as
// "Authorization: Bearer <token>" when it dials the session's wss:// URL.
//
// Tokens are 256 bits from crypto/rand, encoded base64url without padding.
// A [Store] keeps only a SHA-256 digest of each token, compares digests in
// constant time, accepts a token once, and forgets it after its TTL. Every
// failure wraps [ErrInvalid]; callers answer all of them the same way (HTTP
// 401) and may log the finer reason, but never the token itself.
package token
