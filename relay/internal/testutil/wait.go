package testutil

import (
	"context"
	"testing"
	"time"
)

// Context returns a context that ends after d or when the test ends. It
// is the test's only deadline: every wait of the test selects on it, so
// that a hung component fails the test with a message instead of hanging
// the binary, however long a loaded machine takes to get there.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// pollInterval paces WaitFor; it decides how soon a condition is seen,
// never whether the test passes.
const pollInterval = 5 * time.Millisecond

// WaitFor polls cond until it holds, failing the test (naming what) when
// ctx ends first. It must run on the test's goroutine (it calls Fatalf).
func WaitFor(ctx context.Context, t testing.TB, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// Wait waits until done is closed, failing the test (naming what) when
// ctx ends first.
func Wait(ctx context.Context, t testing.TB, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("timed out waiting for %s", what)
	}
}
