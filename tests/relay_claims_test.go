package tests

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/tools/camerasim/camera"
)

// TestRelayExpiredTokenEndToEnd: SECURITY.md "Tokens" — a module that
// presents its session token after tokenTTL is refused. The relay runs with
// a 1 s token; the module's link to the relay is frozen until the token has
// expired, then thawed. The relay refuses the websocket (401, logged as an
// expired token), the module answers tunnelOpen with that 401 and its cause,
// the relay counts the cause, and the player gets 503; no tunnel opens.
// Also SECURITY.md: the 401 body carries no detail, the same for a wrong, a
// missing and an unknown session's token.
func TestRelayExpiredTokenEndToEnd(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rc := newRelayChain(t, ctx, relayOptions{linkProxy: true})

	// The same relay again, with a 1 s token and a method timeout longer
	// than the freeze (so that the module's answer, not a hub timeout,
	// ends the session). Later flags override earlier ones.
	rc.relay.Stop(10 * time.Second)
	rc.relayArgs = append(rc.relayArgs, "--token-ttl", "1s", "--method-timeout", "25s")
	rc.startRelay(ctx)
	rc.link.Retarget(rc.ready.WebsocketListen)

	// The 401 body: no detail, whatever was wrong.
	base := strings.TrimSuffix(rc.ready.WebsocketURL, "/")
	bodies := map[string]string{}
	for name, auth := range map[string]string{"wrong token": "Bearer not-the-token", "no token": "", "basic scheme": "Basic eDp5"} {
		status, body := rawUpgrade(t, ctx, rc, base+"/tunnels/00000000-0000-4000-8000-000000000000", auth)
		if status != http.StatusUnauthorized {
			t.Errorf("%s: HTTP %d, want 401", name, status)
		}
		bodies[name] = body
	}
	for name, body := range bodies {
		if strings.TrimSpace(body) != "unauthorized" {
			t.Errorf("%s: 401 body %q, want just \"unauthorized\"", name, body)
		}
	}

	rc.link.Freeze()
	before := rc.link.Total()
	player, err := net.Dial("tcp", rc.listen("cam1"))
	if err != nil {
		t.Fatal(err)
	}
	defer player.Close()
	reply := make(chan string, 1)
	go func() {
		player.SetDeadline(time.Now().Add(2 * time.Minute))
		fmt.Fprintf(player, "OPTIONS rtsp://%s%s RTSP/1.0\r\nCSeq: 1\r\n\r\n", player.RemoteAddr(), camera.DefaultPath)
		status, _ := bufio.NewReader(player).ReadString('\n')
		reply <- strings.TrimSpace(status)
	}()
	testutil.WaitUntil(t, ctx, "the module to dial the relay (frozen link)", func() bool { return rc.link.Total() > before })
	time.Sleep(2500 * time.Millisecond) // let the 1 s token expire: setup, not a verdict
	rc.link.Thaw()

	select {
	case status := <-reply:
		if !strings.Contains(status, "503") {
			t.Errorf("player got %q, want 503 (no tunnel)", status)
		}
	case <-ctx.Done():
		t.Fatal("the player got no answer")
	}
	testutil.WaitUntil(t, ctx, "the relay's session closed line", func() bool { return len(sessionClosedLines(rc.relay)) > 0 })
	refused := logLines(rc.relay, "module connection refused")
	if len(refused) == 0 || !strings.Contains(fmt.Sprint(refused[len(refused)-1]["reason"]), "expired") {
		t.Errorf("relay's refusal lines %v, want one naming the expired token", refused)
	}
	closed := sessionClosedLines(rc.relay)
	last := closed[len(closed)-1]
	if last["outcome"] != "method_failed" || last["method_status"] != float64(401) ||
		!strings.Contains(fmt.Sprint(last["reason"]), "(http_status): Could not open the websocket to remoteEndpoint: the endpoint answered HTTP 401 Unauthorized") {
		t.Errorf("session closed line %v, want method_failed, 401 and the module's cause", last)
	}
	if m := rc.relayMetrics(ctx); !strings.Contains(m, `relay_module_open_failures_total{cause="http_status"} 1`) {
		t.Errorf("relay metrics lack the counted cause:\n%s", grepLines(m, "relay_module_open_failures_total"))
	}
}

// rawUpgrade sends a websocket upgrade to the relay and returns the status
// and body of its answer.
func rawUpgrade(t *testing.T, ctx context.Context, rc *relayChain, endpoint, authorization string) (int, string) {
	t.Helper()
	u := "https" + strings.TrimPrefix(endpoint, "wss")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	tr := &http.Transport{TLSClientConfig: rc.relayTLS.Clone()}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("upgrade request: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
