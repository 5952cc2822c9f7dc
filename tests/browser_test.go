package tests

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
)

// chromiumPath is Debian's Chromium; the test never downloads a browser.
const chromiumPath = "/usr/bin/chromium"

// requireBrowser returns node's path, skipping the test when Chromium,
// Node.js or playwright-core is missing, except in CI (CI=true), where that
// is a failure: scripts/setup.sh --for test installs them.
func requireBrowser(t *testing.T) string {
	t.Helper()
	var missing []string
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node (Node.js 20+)")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		missing = append(missing, chromiumPath+" (Debian package chromium)")
	}
	if _, err := os.Stat(filepath.Join("browser", "node_modules", "playwright-core", "package.json")); err != nil {
		missing = append(missing, "tests/browser/node_modules (npm ci in tests/browser)")
	}
	if len(missing) > 0 {
		msg := "missing " + strings.Join(missing, ", ") + ": run scripts/setup.sh --for test"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return node
}

// TestBrowserPlays: a person opens the relay's page in Chromium, mistypes
// the password (the page says so), logs in as alice, presses Watch on the shared camera "door", and sees it play: the
// <video> has a picture (videoWidth > 0), its currentTime advances by five
// seconds of video without going back, and the page says "live". Behind it: one
// tunnelOpen, packets sent over WebRTC, and the tunnel closes after the
// browser leaves. The screenshot is kept in the test's artifact directory
// (go test -artifacts keeps it under -outputdir).
func TestBrowserPlays(t *testing.T) {
	t.Parallel()
	node := requireBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	wc := newWebChain(t, ctx)

	shot := filepath.Join(t.ArtifactDir(), "browser-door.png")
	cmd := exec.CommandContext(ctx, node, filepath.Join("browser", "play.js"))
	cmd.Env = append(os.Environ(),
		"WEB_URL="+wc.web.WebURL, "VIEWER_USER=alice", "VIEWER_PASSWORD="+wc.password,
		"CAMERA=door", "SCREENSHOT="+shot, "PLAY_SECONDS=5", "CHROMIUM="+chromiumPath)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("screenshot: %s", shot)
	if err != nil {
		t.Fatalf("the browser did not play: %v\n%s\n%s", err, out, stderr.String())
	}
	var seen struct {
		Width, Height int
		Times         []float64
		State         string
		Viewers       string
	}
	if err := json.Unmarshal(out, &seen); err != nil {
		t.Fatalf("play.js output %q: %v", out, err)
	}
	t.Logf("the browser saw %dx%d, currentTime %v, state %q, %s watching", seen.Width, seen.Height, seen.Times, seen.State, seen.Viewers)
	if seen.Width <= 0 || seen.Height <= 0 {
		t.Errorf("video size %dx%d", seen.Width, seen.Height)
	}

	m := wc.relayMetrics(ctx)
	if got := metricValue(m, `relay_method_calls_total{status="200"}`); got != 1 {
		t.Errorf("tunnelOpen calls answered 200: %v, want 1", got)
	}
	if got := metricValue(m, `relay_webrtc_packets_sent_total{camera="door"}`); got <= 0 {
		t.Errorf("relay_webrtc_packets_sent_total %v", got)
	}
	// The person pressed Stop: the page hung up, and the tunnel closes
	// after the linger.
	testutil.WaitUntil(t, ctx, "the browser's session to end and the tunnel to close", func() bool {
		m := wc.relayMetrics(ctx)
		return metricValue(m, `relay_webrtc_viewers{camera="door"}`) == 0 &&
			metricValue(m, `relay_upstream_state{camera="door",state="idle"}`) == 1
	})
	if len(logLines(wc.relay, "login")) != 1 || len(logLines(wc.relay, "webrtc viewer joined")) != 1 {
		t.Errorf("want one login and one webrtc viewer in the relay's log")
	}
	// Stop closes the peer connection (DTLS close) and sends DELETE: the
	// session ends by whichever arrives first, not by an ICE timeout.
	left := logLines(wc.relay, "webrtc viewer left")
	if len(left) != 1 {
		t.Fatalf("%d webrtc viewers left, want 1", len(left))
	}
	if r, _ := left[0]["reason"].(string); !strings.Contains(r, "DELETE") && r != "peer connection closed" {
		t.Errorf("the session ended with %q, want the page's hang-up", r)
	}
	if strings.Contains(wc.relay.Output(), wc.password) {
		t.Error("the password appears in the relay's output")
	}
}
