package session

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

// TestMaxSessionsCountsOpening: SECURITY.md "Exhaust the module" —
// maxSessions counts tunnels being opened, not only open ones: with
// maxSessions 1 and one call still dialling its camera, a second call gets
// 429 at once; when the first call has ended (here: its dial failed), the
// slot is free again.
func TestMaxSessionsCountsOpening(t *testing.T) {
	ctx := testutil.Context(t, 30*time.Second)
	h := newHarness(t, func(s *settings.Settings) {
		s.MaxSessions = 1
		s.Targets[555] = "hanging.camera:554"
	})
	dialling := make(chan struct{})
	release := make(chan struct{})
	h.m.SetDialCamera(func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "hanging.camera:554" {
			close(dialling)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, context.Canceled
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	})
	h.start(t)

	first := make(chan openResponse, 1)
	go func() { // HandleTunnelOpen, not h.open: no t.Fatal off the test goroutine
		status, body := h.m.HandleTunnelOpen(ctx, h.payload(h.cloud.endpoint("/first"), 555))
		first <- openResponse{status: status, raw: string(body)}
	}()
	<-dialling // the first call holds the only slot while it dials

	r := h.open(t, ctx, h.payload(h.cloud.endpoint("/second"), 554))
	if r.status != 429 || !strings.Contains(r.raw, "Too many sessions: the limit is 1") {
		t.Fatalf("second call while the first is opening: %d %s, want 429", r.status, r.raw)
	}
	select {
	case r := <-first:
		t.Fatalf("the first call answered before its dial ended: %+v", r)
	default:
	}
	close(release)
	if r := <-first; r.status != 400 {
		t.Fatalf("first call: %d %s, want 400 (camera unreachable)", r.status, r.raw)
	}
	if r := h.open(t, ctx, h.payload(h.cloud.endpoint("/third"), 554)); r.status != 200 {
		t.Fatalf("after the first call ended: %d %s, want 200", r.status, r.raw)
	}
}
