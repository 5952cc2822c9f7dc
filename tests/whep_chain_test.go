package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// webReady is what the relay's ready line says about browser playback.
type webReady struct {
	WebURL          string `json:"webURL"`
	WebRTCUDPListen string `json:"webrtcUDPListen"`
	WebRTCTCPListen string `json:"webrtcTCPListen"`
}

// webChain is the relay chain with browser playback on: WebRTC on
// loopback ports of the relay's choosing.
type webChain struct {
	*relayChain
	web    webReady
	client *http.Client // trusts the relay's CA
}

// newWebChain starts the relay chain, then restarts the relay with WebRTC
// listeners (relayChain's helpers start it without), on the same ports.
func newWebChain(t *testing.T, ctx context.Context) *webChain {
	t.Helper()
	// The module must be allowed to dial the relay on loopback (a guard
	// against SSRF refuses loopback hosts it is not told about).
	rc := newRelayChain(t, ctx, relayOptions{moduleEnv: []string{"RTSPTUNNEL_ALLOWEDREMOTEHOSTS=127.0.0.1"}})
	rc.relay.Stop(10 * time.Second)
	rc.relayArgs = append(rc.relayArgs, "--webrtc-udp-listen", "127.0.0.1:0", "--webrtc-tcp-listen", "127.0.0.1:0")
	rc.startRelay(ctx)
	wc := &webChain{relayChain: rc}
	for _, l := range rc.relay.Lines() {
		if strings.HasPrefix(l, `{"ready":true`) {
			if err := json.Unmarshal([]byte(l), &wc.web); err != nil {
				t.Fatal(err)
			}
		}
	}
	if wc.web.WebURL == "" || wc.web.WebRTCUDPListen == "" || wc.web.WebRTCTCPListen == "" {
		t.Fatalf("the ready line lacks webURL or the WebRTC listeners: %+v", wc.web)
	}
	// The page's host is the websocket listener's (the public URL is
	// derived from it here).
	wc.client = &http.Client{Transport: &http.Transport{TLSClientConfig: rc.relayTLS.Clone()}, Timeout: 30 * time.Second}
	t.Cleanup(wc.client.CloseIdleConnections)
	return wc
}

// login gets a bearer token for user from POST /login.
func (wc *webChain) login(ctx context.Context, user, password string) (string, int) {
	wc.t.Helper()
	form := url.Values{"user": {user}, "password": {password}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, wc.web.WebURL+"login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := wc.client.Do(req)
	if err != nil {
		wc.t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	json.NewDecoder(res.Body).Decode(&body)
	return body.Token, res.StatusCode
}

// whepPost sends an offer to camera with token ("" for none) and returns
// the status, the body and the Location.
func (wc *webChain) whepPost(ctx context.Context, camera, token string, offer []byte) (int, string, string) {
	wc.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, wc.web.WebURL+"whep/"+camera, bytes.NewReader(offer))
	req.Header.Set("Content-Type", "application/sdp")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := wc.client.Do(req)
	if err != nil {
		wc.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header.Get("Location")
}

// whepDelete ends a session.
func (wc *webChain) whepDelete(ctx context.Context, location, token string) int {
	wc.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, strings.TrimSuffix(wc.web.WebURL, "/")+location, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := wc.client.Do(req)
	if err != nil {
		wc.t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
