// Package testutil holds the helpers the emulator's tests share, so that
// each exists once: a test context ([Context]) and a goroutine-safe sink for
// a child process's output ([LogBuffer]).
//
// It is for *_test.go files only: no package of the emulator imports it, so
// the edgeemu binary does not contain it (go list -deps . shows it absent).
// Certificates come from the emulator's own internal/certs, which tests use
// as they are; the emulator package's goroutine-leak check stays in its
// TestMain, the only one.
package testutil

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"
)

// Timeout bounds every wait of a test that uses [Context]. The events waited
// for take milliseconds; a minute is far beyond what a loaded machine adds,
// so a wait fails only when the event never comes. No test decides pass/fail
// by this deadline: timing goals belong in benchmarks.
const Timeout = time.Minute

// Context returns a context that ends after [Timeout] or when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// LogBuffer is a goroutine-safe sink: a process or component writes into it
// from its own goroutines while the test reads it. The zero value is ready.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

// Write appends p; it is safe for concurrent use.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
