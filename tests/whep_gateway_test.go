package tests

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
)

// TestWHEPGateway runs the real binaries with browser playback on.
// First the refusals: an offer without a token, with a forged one, from a
// user not on the camera's list, for an unknown camera, and a wrong
// password at the login each get their status, and none of them makes the
// relay call tunnelOpen. Then ten WebRTC viewers (pion, as browsers) and
// five ffmpeg RTSP players watch the shared camera together: each WebRTC
// viewer's stream starts with a keyframe carrying SPS and PPS, every
// player decodes, yet the relay opened one tunnel, the camera served one
// RTSP session and the edge link carried one stream's worth of bytes.
func TestWHEPGateway(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	wc := newWebChain(t, ctx)

	if _, status := wc.login(ctx, "alice", "not the password"); status != http.StatusUnauthorized {
		t.Errorf("login with a wrong password: %d, want 401", status)
	}
	alice, status := wc.login(ctx, "alice", wc.password)
	if status != http.StatusOK || alice == "" {
		t.Fatalf("login: %d", status)
	}
	bob, status := wc.login(ctx, "bob", wc.password)
	if status != http.StatusOK {
		t.Fatalf("login bob: %d", status)
	}
	probe := newWHEPViewer(t)
	offer := probe.offer(t)
	for _, tc := range []struct {
		name, camera, token string
		want                int
	}{
		{"no token", "door", "", http.StatusUnauthorized},
		{"forged token", "door", alice[:len(alice)-4] + "AAAA", http.StatusUnauthorized},
		{"not on the camera's users", "door", bob, http.StatusForbidden},
		{"unknown camera", "nope", alice, http.StatusNotFound},
		{"passthrough camera", "cam1", alice, http.StatusNotFound},
	} {
		if status, body, _ := wc.whepPost(ctx, tc.camera, tc.token, offer); status != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, status, body, tc.want)
		}
	}
	if n := len(logLines(wc.relay, "session started")); n != 0 {
		t.Fatalf("refused offers started %d tunnel sessions", n)
	}

	const viewers, players = 10, 5
	u := wc.doorURL("alice", wc.password)
	var wg sync.WaitGroup
	frames := make([]int, players)
	errs := make([]error, players)
	for i := range players {
		wg.Add(1)
		go func() {
			defer wg.Done()
			frames[i], errs[i] = harness.FFmpegDecode(ctx, u, 8*time.Second)
		}()
	}
	vs := make([]*whepViewer, viewers)
	for i := range vs {
		vs[i] = newWHEPViewer(t)
		if err := vs[i].play(ctx, t, wc, "door", alice); err != nil {
			t.Fatalf("viewer %d: %v", i, err)
		}
	}
	// 50 frames: two seconds of the clip, past at least one keyframe.
	testutil.WaitUntil(t, ctx, "every WebRTC viewer to receive 50 frames", func() bool {
		for _, v := range vs {
			if v.frames.Load() < 50 {
				return false
			}
		}
		return true
	})
	m := wc.relayMetrics(ctx)
	if got := metricValue(m, `relay_webrtc_viewers{camera="door"}`); got != viewers {
		t.Errorf("relay_webrtc_viewers %v, want %d", got, viewers)
	}
	for i, v := range vs {
		if !v.keyFirst.Load() {
			t.Errorf("viewer %d: the first frame was not a keyframe with SPS and PPS", i)
		}
		if f, _ := v.failure.Load().(string); f != "" {
			t.Errorf("viewer %d: %s", i, f)
		}
		if got := wc.whepDelete(ctx, v.location, alice); got != http.StatusOK {
			t.Errorf("viewer %d: DELETE %d", i, got)
		}
	}
	wg.Wait()
	for i := range players {
		// 25 fps for 8 s; decoding starts at the first keyframe (GOP 1 s).
		if errs[i] != nil || frames[i] < 100 {
			t.Errorf("RTSP player %d: %d frames decoded, %v", i, frames[i], errs[i])
		}
	}

	m = wc.relayMetrics(ctx)
	if got := metricValue(m, `relay_method_calls_total{status="200"}`); got != 1 {
		t.Errorf("tunnelOpen calls answered 200: %v, want exactly 1 for %d viewers", got, viewers+players)
	}
	if got := wc.cam3.Sessions(); got != 1 {
		t.Errorf("the camera served %d RTSP sessions, want 1", got)
	}
	fromEdge := metricValue(m, `relay_edge_bytes_total{camera="door",direction="from_camera"}`)
	toRTSP := metricValue(m, `relay_player_bytes_total{camera="door"}`)
	toWebRTC := metricValue(m, `relay_webrtc_bytes_sent_total{camera="door"}`)
	t.Logf("edge bytes %v; to RTSP players %v, to WebRTC viewers %v (fan-out %.1f)", fromEdge, toRTSP, toWebRTC, (toRTSP+toWebRTC)/fromEdge)
	// The clip is ~84 kbit/s: one stream for the test's ~15 s is well
	// under 1 MB; fifteen would be several.
	if fromEdge <= 0 || fromEdge > 600_000 {
		t.Errorf("edge bytes from the camera %v: not one stream's worth", fromEdge)
	}
	if toWebRTC < fromEdge {
		t.Errorf("WebRTC viewers got %v bytes for %v from the edge: no fan-out", toWebRTC, fromEdge)
	}
	testutil.WaitUntil(t, ctx, "every viewer gone and the shared tunnel closed", func() bool {
		m := wc.relayMetrics(ctx)
		return metricValue(m, `relay_webrtc_viewers{camera="door"}`) == 0 &&
			metricValue(m, `relay_upstream_state{camera="door",state="idle"}`) == 1
	})
	if n := len(logLines(wc.relay, "session closed")); n != 1 {
		t.Errorf("%d tunnel sessions closed, want 1", n)
	}
}
