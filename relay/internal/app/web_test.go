package app

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/config"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

// TestWebRouting: with WebRTC on, the websocket listener also serves the
// page, its API and WHEP, and tunnels still reach the websocket handler;
// with it off, only tunnels are served. The ready line names the page and
// the ICE listeners.
func TestWebRouting(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(map[bool]string{true: "webrtc on", false: "webrtc off"}[on], func(t *testing.T) {
			ctx := testutil.Context(t, 20*time.Second)
			a := startApp(t, minimalConfig(func(cfg *config.Config) {
				cfg.SelfSigned = true
				cfg.Cameras = []config.Camera{{Name: "c", DeviceID: "d", LocalPort: 554}} // shared: WHEP serves it
				if on {
					cfg.WebRTCUDPListen, cfg.WebRTCTCPListen = "127.0.0.1:0", "127.0.0.1:0"
				}
			}))
			r := a.Ready()
			base := "https" + strings.TrimPrefix(r.WebsocketURL, "wss")
			if on != (r.WebURL == base+"/" && r.WebRTCUDPListen != "" && r.WebRTCTCPListen != "") {
				t.Fatalf("ready line %+v", r)
			}
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: testutil.PoolFromFile(t, r.CAFile)}}
			defer tr.CloseIdleConnections()
			do := func(method, path, auth, ctype, body string) (int, string) {
				req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				if ctype != "" {
					req.Header.Set("Content-Type", ctype)
				}
				res, err := (&http.Client{Transport: tr}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				b, _ := io.ReadAll(res.Body)
				return res.StatusCode, string(b)
			}
			if code, _ := do(http.MethodGet, "/tunnels/nope", "Bearer x", "", ""); code != http.StatusUnauthorized {
				t.Errorf("tunnel with a bad token: %d, want 401", code)
			}
			code, body := do(http.MethodGet, "/", "", "", "")
			if on != (code == http.StatusOK && strings.Contains(body, "<video")) {
				t.Errorf("GET /: %d", code)
			}
			code, body = do(http.MethodGet, "/api/cameras", "", "", "")
			if on != (code == http.StatusOK && strings.Contains(body, `"name":"c"`)) {
				t.Errorf("GET /api/cameras: %d %s", code, body)
			}
			// An anonymous camera: WHEP answers the malformed offer itself.
			code, body = do(http.MethodPost, "/whep/c", "", "application/sdp", "hello")
			if on != (code == http.StatusBadRequest && strings.Contains(body, "not valid SDP")) {
				t.Errorf("POST /whep/c: %d %s", code, body)
			}
		})
	}
}
