// Package testutil holds the helpers that the relay's tests share: a
// log sink with its slog logger, deadline and polling helpers, goroutine
// leak checks, loopback TCP pairs, in-memory certificates (a CA, leaves
// and self-signed pairs, also written as PEM files), a clock the test
// sets and a real RTSP camera (gortsplib's server sending H.264).
//
// It is for *_test.go files only: no package of the relay's binary may
// import it (TestNotInBinary checks that `go list -deps` of the main
// package does not list it). It imports no relay package, so that a
// package's internal tests (package x, not x_test) can use it without an
// import cycle.
//
// Every helper fails the test through testing.TB instead of returning
// errors, and bounds its waits by the test's context, never by a wall
// clock of its own: a loaded machine makes tests slower, not red. The
// leak checks, which run after the test's context, are the exception:
// they give goroutines leakWait (15 s) to end, far beyond any scheduling
// delay.
package testutil
