package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

// notOnlineErr is IoT Hub's answer when the module is not connected or not
// subscribed to methods (404103), as iothub.Error reports it.
type notOnlineErr struct{ code int }

func (e notOnlineErr) Error() string         { return fmt.Sprintf("IoT Hub answered %d", e.code) }
func (e notOnlineErr) HTTPStatus() int       { return e.code / 1000 }
func (e notOnlineErr) DeviceNotOnline() bool { return e.code == 404103 }

// TestOpenRetriesNotOnline: with NotOnlineRetry set, a tunnelOpen that IoT
// Hub answers 404103 (the module never saw it: it is renewing its token or
// reconnecting) is called again with a short backoff within SessionWait, and
// the session opens; a
// 504 (the module may have acted), another hub error or the module's own
// answer is final. A module that stays offline ends the session with the
// hub's answer, not the timer.
func TestOpenRetriesNotOnline(t *testing.T) {
	tests := []struct {
		name      string
		fail      error       // what the first failures calls return
		failures  int64       // -1: every call
		module    *OpenResult // the module's answer after the failures (nil: dial back, 200)
		wantCalls func(int64) bool
		outcome   string // "" when the session opens
		noRetry   bool   // NotOnlineRetry left at zero
	}{
		{name: "not online twice, then the module", fail: notOnlineErr{404103}, failures: 2,
			wantCalls: func(n int64) bool { return n == 3 }},
		{name: "gateway timeout is final", fail: notOnlineErr{504101}, failures: 1,
			wantCalls: func(n int64) bool { return n == 1 }, outcome: metrics.OutcomeMethodError},
		{name: "device not found is final", fail: notOnlineErr{404001}, failures: 1,
			wantCalls: func(n int64) bool { return n == 1 }, outcome: metrics.OutcomeMethodError},
		{name: "the module's 404 is final", failures: 0, module: &OpenResult{404, json.RawMessage(`{"code":"404"}`)},
			wantCalls: func(n int64) bool { return n == 1 }, outcome: metrics.OutcomeMethodFailed},
		{name: "offline throughout", fail: notOnlineErr{404103}, failures: -1,
			wantCalls: func(n int64) bool { return n > 2 }, outcome: metrics.OutcomeMethodError},
		{name: "retries off", fail: notOnlineErr{404103}, failures: -1, noRetry: true,
			wantCalls: func(n int64) bool { return n == 1 }, outcome: metrics.OutcomeMethodError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testutil.Context(t, testTimeout)
			var calls atomic.Int64
			var h *harness
			h = newHarness(t, func(ctx context.Context, camera string, req OpenRequest) (OpenResult, error) {
				n := calls.Add(1)
				if tt.failures < 0 || n <= tt.failures {
					return OpenResult{}, fmt.Errorf("failed to invoke method: %w", tt.fail)
				}
				if tt.module != nil {
					return *tt.module, nil
				}
				return h.okModule(echo)(ctx, camera, req)
			}, func(s *Server) {
				s.SessionWait, s.NotOnlineRetry = 5*time.Second, time.Minute
				if tt.noRetry {
					s.NotOnlineRetry = 0
				}
			})
			tun, err := h.srv.Dial(ctx, "cam1")
			if tun != nil {
				tun.Close()
			}
			var de *DialError
			switch {
			case tt.outcome == "" && err != nil:
				t.Fatalf("Dial: %v, want a tunnel", err)
			case tt.outcome != "" && (!errors.As(err, &de) || de.Outcome != tt.outcome):
				t.Fatalf("Dial: %v, want outcome %s", err, tt.outcome)
			}
			if n := calls.Load(); !tt.wantCalls(n) {
				t.Errorf("tunnelOpen called %d times", n)
			}
			retries := promtest.ToFloat64(h.srv.Metrics.MethodRetries)
			if want := float64(calls.Load() - 1); retries != want {
				t.Errorf("relay_method_retries_total = %v, want %v", retries, want)
			}
			logged := len(h.logs.Records("tunnelOpen: the module is not connected or not subscribed to methods (renewing its token, or reconnecting); retrying"))
			if want := min(1, int(retries)); logged != want {
				t.Errorf("retry logged %d times, want %d (once per session)", logged, want)
			}
		})
	}
}
