package testutil

import (
	"context"
	"testing"
	"time"
)

// pollInterval is how often [WaitUntil] checks: often enough that a test
// does not idle, rarely enough not to load the machine.
const pollInterval = 20 * time.Millisecond

// WaitUntil polls cond until it holds, failing the test with what when ctx
// ends first. The deadline is ctx's: tests give it minutes, so that a loaded
// machine only makes the wait longer, never fails it.
func WaitUntil(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(pollInterval):
		}
	}
}

// Sleep waits for d, or returns ctx's error as soon as ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
