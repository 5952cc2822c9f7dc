package app

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/rtspserver"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/web"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/whep"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/wsserver"
)

// initWHEP opens the WebRTC side for the shared cameras, when configured.
// It must run before the cameras' upstreams start.
func (a *App) initWHEP(shared []*rtspserver.Camera) error {
	cfg := a.Config
	if !cfg.WebRTC() {
		return nil
	}
	signer, err := web.NewSigner(time.Duration(cfg.WebTokenTTL))
	if err != nil {
		return err
	}
	a.signer = signer
	cams := make([]*whep.Camera, len(shared))
	for i, c := range shared {
		cams[i] = &whep.Camera{Name: c.Name, Users: c.Users, Source: &c.Upstream}
	}
	w := &whep.Server{
		Cameras:             cams,
		AllowAnonymous:      cfg.AllowAnonymous,
		Authenticate:        signer.Authenticate,
		ICE:                 whep.ICE{UDPListen: cfg.WebRTCUDPListen, TCPListen: cfg.WebRTCTCPListen, PublicIPs: cfg.PublicIPs()},
		MaxViewersPerCamera: cfg.MaxPlayersPerCamera,
		MaxViewers:          cfg.MaxPlayers,
		MaxSessionDuration:  time.Duration(cfg.MaxSessionDuration),
		AcquireTimeout:      time.Duration(cfg.SessionWaitTimeout) + 10*time.Second,
		Logger:              a.Logger,
		Metrics:             a.core.Metrics,
	}
	if err := w.Initialize(); err != nil {
		return err
	}
	a.whep = w
	a.ready.WebRTCUDPListen = w.UDPAddr()
	a.ready.WebRTCTCPListen = w.TCPAddr()
	return nil
}

// httpHandler routes the websocket listener: module tunnels under the
// public URL's path, and with WebRTC on, the page, its API and WHEP.
func (a *App) httpHandler(public *url.URL) http.Handler {
	ws := &wsserver.Handler{
		Acceptor: a.core, Prefix: public.Path, Logger: a.Logger,
		PingInterval: time.Duration(a.Config.PingInterval), PingTimeout: time.Duration(a.Config.PingTimeout),
	}
	if a.whep == nil {
		return ws
	}
	page := &web.Handler{Signer: a.signer, Verifier: a.verifier, Limiter: a.limiter, Cameras: a.whep, WHEP: a.whep, Logger: a.Logger,
		BehindTLSProxy: a.Config.InsecureWS}
	tunnels := strings.TrimRight(public.Path, "/") + "/tunnels/"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, tunnels) {
			ws.ServeHTTP(w, r)
			return
		}
		page.ServeHTTP(w, r)
	})
}

// webURL is the page's address: the public URL's host over HTTPS (HTTP
// with insecureWS, where the TLS proxy in front serves it as HTTPS).
func webURL(public *url.URL) string {
	scheme := "https"
	if public.Scheme == "ws" {
		scheme = "http"
	}
	return scheme + "://" + public.Host + "/"
}
