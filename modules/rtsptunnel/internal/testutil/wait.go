package testutil

import (
	"context"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond every 5 ms until it holds, and fails the test naming
// what when ctx ends first. It is how tests wait for readiness and outcomes:
// against a deadline, never by sleeping a fixed time.
func WaitFor(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// StartRun runs run in a goroutine with a context derived from ctx until
// stop is called or the test ends (stop runs at t.Cleanup), and checks then
// that run returned nil within grace of the cancellation. stop is safe to
// call more than once.
func StartRun(t testing.TB, ctx context.Context, grace time.Duration, run func(context.Context) error) (stop func()) {
	t.Helper()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(rctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(grace):
				t.Errorf("Run did not return within %v of its cancellation", grace)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// Context returns a context that ends with the test or after d, whichever
// comes first.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
