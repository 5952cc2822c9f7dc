// Package auth authenticates RTSP players (and, later, web pages) against
// the relay's configured users, without the relay ever holding a clear-text
// password.
//
// # Wire contract
//
// A request without acceptable credentials is answered 401 with the values
// [Verifier.Challenge] returns, one WWW-Authenticate header each, in order:
//
//	WWW-Authenticate: Digest realm="<realm>", nonce="<nonce>", algorithm=MD5, qop="auth"
//	WWW-Authenticate: Basic realm="<realm>"     (only on TLS connections)
//
// The Digest challenge gets ", stale=TRUE" appended when the client's
// previous answer was right but its nonce had expired, so that clients
// retry with the new nonce without asking the user again.
//
// [Verifier.Check] accepts:
//
//   - Digest, algorithm MD5 (or no algorithm parameter), either with
//     qop=auth (RFC 2617/RFC 7616: response = MD5(HA1:nonce:nc:cnonce:auth:HA2))
//     or without qop (the RFC 2069 form, response = MD5(HA1:nonce:HA2), which
//     common RTSP clients send even when offered qop: gortsplib's client does,
//     as the tests show, and so do GStreamer and VLC/live555).
//     HA2 = MD5(method:uri). The nonce must be one this relay issued,
//     the realm ours, and the uri parameter must name the request's resource
//     (the full URL or just its path; one trailing "/" is ignored).
//     Refused: SHA-256 and SHA-512-256 (we hold only MD5 HA1s), the -sess
//     variants, qop=auth-int, userhash and username* (RFC 7616 extensions).
//   - Basic, only over TLS (RTSPS or HTTPS). Over a plain connection it is
//     refused even when correct, so that a player configured for Basic gets
//     an error the first time instead of sending the password in clear text
//     on every request.
//
// # What the stored secrets expose
//
// Each [User] carries HA1 = MD5(name:realm:password) for Digest and a
// bcrypt or argon2id hash for Basic. HA1 is password-equivalent for this
// relay's realm only: anyone who reads it can answer Digest challenges for
// that user here, without knowing the password. It does not reveal the
// password except by brute force, and, because the realm is hashed in, it is
// useless against another realm or site (where people may reuse the same
// password). Brute force against HA1 is fast (one MD5 per guess, salted only
// by user and realm), so the config file must be protected like a password
// file, and passwords must be long and random. Changing the realm
// invalidates every HA1: all users must be re-hashed with [HashPassword].
//
// # Nonces
//
// A nonce is base64url(ts || random || mac), where ts is the issue time as
// 8 bytes of big-endian Unix nanoseconds, random is 16 bytes from
// crypto/rand and mac is the first 16 bytes of HMAC-SHA256(key, ts||random).
// The relay keeps no state per issued nonce: anyone may ask for 401s, and
// none of them costs memory. A nonce whose MAC does not verify was not
// issued by us (or by another key, e.g. before a restart with a random key)
// and is refused like a wrong password. A nonce older than
// [Verifier.NonceTTL] is stale; a correct answer with it gets [ErrStale] so
// the caller re-challenges with stale=TRUE.
//
// With qop=auth, the verifier remembers, per nonce, the highest nonce count
// (nc) seen in a request that verified, and refuses any nc not above it
// ([ErrReplay]). That table is bounded (10000 nonces); entries expire with
// their nonce, and when it is full the oldest entry is evicted and every
// untracked nonce issued no later than the evicted one is treated as stale,
// so eviction can never reopen a nonce to replay. The RFC 2069 form carries
// no nc: a captured request can be replayed until its nonce expires. That is
// inherent to the form the common RTSP players use; TLS is the remedy.
//
// # Rate limiting
//
// [Limiter] bounds failed attempts per source address (per /64 for IPv6)
// with a token bucket, 10 failures then one more every 6 s by default. The
// caller asks [Limiter.Allowed] before checking credentials and calls
// [Limiter.Failed] after each failure ([ErrBadCredentials], [ErrReplay],
// [ErrBasicInsecure], [ErrMalformed]; not [ErrStale] or [ErrNoCredentials],
// which are normal steps of the handshake).
//
// Nothing in this package keeps global mutable state; every value documents
// whether it is safe for concurrent use.
package auth
