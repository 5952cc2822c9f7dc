// Package web serves the relay's page for browsers: static files embedded
// in the binary (no build step), a login that checks a user's
// bcrypt/argon2id hash over TLS only (the same Verifier and per-address
// Limiter as RTSP players), short-lived HMAC-signed bearer tokens that the
// WHEP endpoint requires, and a small JSON list of the cameras the user may
// watch with their state and viewer count. Tokens are stateless: the
// relay stores nothing per login, and a restart (a new random key) logs
// everyone out.
package web
