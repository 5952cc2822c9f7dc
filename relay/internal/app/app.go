package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/auth"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/certfile"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/config"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/core"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/iothub"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/rtspfront"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/rtspserver"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/upstream"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/web"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/whep"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/wsserver"
)

// App is the relay. Set the exported fields, call Initialize, then Close.
type App struct {
	// Config is a validated configuration. Required.
	Config *config.Config
	// Logger receives all logs. Required.
	Logger *slog.Logger
	// Registry receives the relay_* collectors and is served on /metrics.
	// Required.
	Registry *prometheus.Registry
	// Authorizer, when set, replaces the one the configuration selects
	// (tests use it to avoid Entra ID).
	Authorizer iothub.Authorizer

	// Set by Initialize; static afterwards.
	ready      Ready
	core       *core.Server
	rtsp       *rtspfront.Server // passthrough cameras
	shared     *rtspserver.Server
	whep       *whep.Server // browser viewers of shared cameras; nil when WebRTC is off
	signer     *web.Signer
	rtspLn     net.Listener
	rtspsLn    net.Listener
	verifier   *auth.Verifier
	limiter    *auth.Limiter
	wsSrv      *http.Server
	wsLn       net.Listener
	metricsSrv *http.Server
	metricsLn  net.Listener
	httpClient *http.Client
	tempCA     string // self-signed PEM file to remove on Close
	serveWG    sync.WaitGroup
	closeOnce  sync.Once
}

// Ready is the JSON line Run prints to stdout once every listener is up.
type Ready struct {
	Ready           bool   `json:"ready"`
	WebsocketURL    string `json:"websocketURL"`
	WebsocketListen string `json:"websocketListen"`
	MetricsURL      string `json:"metricsURL,omitempty"`
	CAFile          string `json:"caFile,omitempty"`
	RTSPListen      string `json:"rtspListen"`
	RTSPSListen     string `json:"rtspsListen,omitempty"`
	// WebURL is the page for browsers (WebRTC on): the websocket
	// endpoint's host over HTTPS.
	WebURL          string        `json:"webURL,omitempty"`
	WebRTCUDPListen string        `json:"webrtcUDPListen,omitempty"`
	WebRTCTCPListen string        `json:"webrtcTCPListen,omitempty"`
	Cameras         []ReadyCamera `json:"cameras"`
}

// ReadyCamera is one camera's entry in the ready line.
type ReadyCamera struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	// Listen is a passthrough camera's own address.
	Listen string `json:"listen,omitempty"`
	// RTSPURL is the URL players use; RTSPSURL the same over TLS, when
	// rtspsListen is set (shared cameras).
	RTSPURL  string `json:"rtspURL"`
	RTSPSURL string `json:"rtspsURL,omitempty"`
}

// Ready returns the ready line's content; valid after Initialize.
func (a *App) Ready() Ready { return a.ready }

// Initialize loads credentials and certificates, opens every listener, and
// starts serving. On error nothing is left open.
func (a *App) Initialize() (err error) {
	cfg := a.Config
	if cfg == nil || a.Logger == nil || a.Registry == nil {
		return errors.New("app: Config, Logger and Registry are required")
	}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()

	m, err := metrics.New(a.Registry)
	if err != nil {
		return err
	}
	for _, c := range cfg.Cameras {
		m.InitCamera(c.Name, c.Shared())
	}
	if err := a.initAuth(); err != nil {
		return err
	}

	opener, err := a.newOpener(m)
	if err != nil {
		return err
	}

	// The websocket endpoint: listen first, so that the public URL can name
	// the actual port.
	a.wsLn, err = net.Listen("tcp", cfg.WebsocketListen)
	if err != nil {
		return fmt.Errorf("websocketListen: failed to listen: %w", err)
	}
	publicURL, err := a.publicURL()
	if err != nil {
		return err
	}
	a.ready.WebsocketURL = publicURL.String()
	a.ready.WebsocketListen = a.wsLn.Addr().String()
	tlsConf, err := a.tlsConfig(publicURL)
	if err != nil {
		return err
	}

	a.core = &core.Server{
		Logger:               a.Logger,
		Opener:               opener,
		Metrics:              m,
		BaseURL:              publicURL,
		SessionWait:          time.Duration(cfg.SessionWaitTimeout),
		NotOnlineRetry:       time.Duration(cfg.NotOnlineRetry),
		TokenTTL:             time.Duration(cfg.TokenTTL),
		MaxSessionsPerCamera: cfg.MaxPlayersPerCamera,
		IdleTimeout:          time.Duration(cfg.IdleTimeout),
	}
	if err := a.core.Initialize(); err != nil {
		return err
	}

	if cfg.MetricsListen != "" {
		a.metricsLn, err = net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metricsListen: failed to listen: %w", err)
		}
		a.ready.MetricsURL = "http://" + a.metricsLn.Addr().String() + "/metrics"
	}

	if err := a.initPlayers(tlsConf); err != nil {
		return err
	}

	// Everything that can fail has succeeded: serve.
	errLog := slog.NewLogLogger(a.Logger.Handler(), slog.LevelDebug)
	a.wsSrv = &http.Server{
		Handler:           a.httpHandler(publicURL),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
	}
	wsLn := wsserver.Listener(a.wsLn) // one write per message; see wsserver.Conn.Write
	if tlsConf != nil {
		wsLn = tls.NewListener(wsLn, tlsConf)
	}
	a.serve(a.wsSrv, wsLn)
	if a.metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(a.Registry, promhttp.HandlerOpts{ErrorLog: errLog}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		a.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
		a.serve(a.metricsSrv, a.metricsLn)
	}
	if a.whep != nil {
		a.ready.WebURL = webURL(publicURL)
	}
	a.ready.Ready = true
	a.Logger.Info("relay listening",
		"web_url", a.ready.WebURL,
		"websocket_url", a.ready.WebsocketURL,
		"websocket_listen", a.ready.WebsocketListen,
		"rtsp_listen", a.ready.RTSPListen,
		"rtsps_listen", a.ready.RTSPSListen,
		"metrics_url", a.ready.MetricsURL,
		"cameras", len(a.ready.Cameras),
		"users", len(cfg.Users),
		"iothub_auth", cfg.AuthMode())
	return nil
}

// initAuth builds the credential verifier and the failure limiter.
func (a *App) initAuth() error {
	cfg := a.Config
	users := make([]auth.User, len(cfg.Users))
	for i, u := range cfg.Users {
		users[i] = auth.User{Name: u.Name, HA1: u.HA1, Hash: u.Hash}
	}
	a.verifier = &auth.Verifier{Realm: cfg.Realm, Users: users}
	if err := a.verifier.Initialize(); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	a.limiter = &auth.Limiter{}
	if cfg.AllowAnonymous {
		var open []string
		for _, c := range cfg.Cameras {
			if len(c.Users) == 0 {
				open = append(open, c.Name)
			}
		}
		a.Logger.Warn("ANONYMOUS ACCESS IS ON: anyone who reaches the relay can watch these cameras and make it open tunnels to them (allowAnonymous)",
			"cameras", open)
	}
	return nil
}

// initPlayers opens the players' side: the RTSP (and RTSPS) listener for
// shared cameras, and a port of its own for each passthrough camera.
func (a *App) initPlayers(tlsConf *tls.Config) error {
	cfg := a.Config
	var err error
	a.rtspLn, err = net.Listen("tcp", cfg.RTSPListen)
	if err != nil {
		return fmt.Errorf("rtspListen: failed to listen: %w", err)
	}
	a.ready.RTSPListen = a.rtspLn.Addr().String()
	var rtspsConf *tls.Config
	if cfg.RTSPSListen != "" {
		a.rtspsLn, err = net.Listen("tcp", cfg.RTSPSListen)
		if err != nil {
			return fmt.Errorf("rtspsListen: failed to listen: %w", err)
		}
		a.ready.RTSPSListen = a.rtspsLn.Addr().String()
		rtspsConf = tlsConf.Clone()
		rtspsConf.NextProtos = nil
	}

	var shared []*rtspserver.Camera
	var lns []rtspfront.Listener
	var passthrough []config.Camera
	for _, c := range cfg.Cameras {
		if !c.Shared() {
			lns = append(lns, rtspfront.Listener{Camera: c.Name, Addr: c.Listen})
			passthrough = append(passthrough, c)
			continue
		}
		u := &base.URL{Scheme: "rtsp", Host: net.JoinHostPort("localhost", fmt.Sprint(c.LocalPort)), Path: "/" + strings.TrimLeft(c.RTSPPath, "/")}
		if c.Username != "" {
			u.User = url.UserPassword(c.Username, c.Password())
		}
		name := c.Name
		shared = append(shared, &rtspserver.Camera{
			Name:  c.Name,
			Users: c.Users,
			Upstream: upstream.Source{
				Camera: c.Name,
				URL:    u,
				Dial: func(ctx context.Context) (net.Conn, error) {
					t, err := a.core.Dial(ctx, name)
					if err != nil {
						return nil, err
					}
					return t, nil
				},
				Linger:          time.Duration(cfg.Linger),
				ReconnectWindow: time.Duration(cfg.ReconnectWindow),
				ReadTimeout:     time.Duration(cfg.IdleTimeout),
			},
		})
		a.ready.Cameras = append(a.ready.Cameras, ReadyCamera{
			Name: c.Name, Mode: config.ModeShared,
			RTSPURL:  rtspURL(a.ready.RTSPListen, c.Name),
			RTSPSURL: rtspsURL(a.ready.RTSPSListen, c.Name),
		})
	}
	a.shared = &rtspserver.Server{
		Listener:            a.rtspLn,
		TLSListener:         a.rtspsLn,
		TLSConfig:           rtspsConf,
		Cameras:             shared,
		Verifier:            a.verifier,
		Limiter:             a.limiter,
		AllowAnonymous:      cfg.AllowAnonymous,
		MaxPlayersPerCamera: cfg.MaxPlayersPerCamera,
		MaxPlayers:          cfg.MaxPlayers,
		MaxSessionDuration:  time.Duration(cfg.MaxSessionDuration),
		DescribeTimeout:     time.Duration(cfg.SessionWaitTimeout) + 10*time.Second,
		Logger:              a.Logger,
		Metrics:             a.core.Metrics,
	}
	// Browser viewers read the same upstreams: the WHEP server hooks into
	// them before they start.
	if err := a.initWHEP(shared); err != nil {
		return err
	}
	if err := a.shared.Initialize(); err != nil {
		a.shared = nil
		return err
	}

	gates := map[string]*rtspserver.Gate{}
	for _, c := range passthrough {
		gates[c.Name] = &rtspserver.Gate{
			Camera: c.Name, Users: c.Users, AllowAnonymous: cfg.AllowAnonymous,
			Verifier: a.verifier, Limiter: a.limiter, Metrics: a.core.Metrics, Logger: a.Logger,
		}
	}
	a.rtsp = &rtspfront.Server{Listeners: lns, Logger: a.Logger, Handle: func(ctx context.Context, camera string, conn net.Conn) {
		admitted, err := gates[camera].Admit(conn, false)
		if err != nil {
			conn.Close()
			return
		}
		if d := time.Duration(cfg.MaxSessionDuration); d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		a.core.HandlePlayer(ctx, camera, admitted)
	}}
	if err := a.rtsp.Initialize(); err != nil {
		a.rtsp = nil
		return err
	}
	for i, c := range passthrough {
		addr := a.rtsp.Addr(i).String()
		a.ready.Cameras = append(a.ready.Cameras, ReadyCamera{Name: c.Name, Mode: config.ModePassthrough, Listen: addr, RTSPURL: rtspURL(addr, c.RTSPPath)})
	}
	return nil
}

func (a *App) serve(srv *http.Server, ln net.Listener) {
	a.serveWG.Add(1)
	go func() {
		defer a.serveWG.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.Logger.Error("server stopped", "address", ln.Addr().String(), "error", err)
		}
	}()
}

// Close stops the listeners, ends every session (tunnels get close code
// 1001), and waits for everything to stop. It may be called more than once.
func (a *App) Close() {
	a.closeOnce.Do(func() {
		if a.whep != nil {
			a.whep.Close() // browser sessions end and give back their holds
		}
		if a.rtsp != nil {
			a.rtsp.Close() // no new players; running sessions end
		}
		if a.shared != nil {
			a.shared.Close() // upstreams close their tunnels (1000), players' sessions end
		} else {
			for _, ln := range []net.Listener{a.rtspLn, a.rtspsLn} {
				if ln != nil {
					ln.Close()
				}
			}
		}
		if a.core != nil && a.core.BaseURL != nil {
			a.core.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range []*http.Server{a.wsSrv, a.metricsSrv} {
			if s != nil {
				s.Shutdown(ctx)
			}
		}
		for _, ln := range []net.Listener{a.wsLn, a.metricsLn} {
			if ln != nil {
				ln.Close() // no-op when the server closed it
			}
		}
		a.serveWG.Wait()
		if a.httpClient != nil {
			a.httpClient.CloseIdleConnections()
		}
		if a.tempCA != "" {
			os.Remove(a.tempCA)
		}
	})
}

// newOpener builds the IoT Hub clients, one per hub host.
func (a *App) newOpener(m *metrics.Metrics) (*hubOpener, error) {
	cfg := a.Config
	var extraCAs []byte
	if cfg.IoTHub.CAFile != "" {
		b, err := os.ReadFile(cfg.IoTHub.CAFile)
		if err != nil {
			return nil, fmt.Errorf("iotHub.caFile: %w", err)
		}
		extraCAs = b
	}
	hc, err := iothub.NewHTTPClient(extraCAs)
	if err != nil {
		return nil, fmt.Errorf("iotHub.caFile: %w", err)
	}
	a.httpClient = hc

	auth := a.Authorizer
	if auth == nil {
		switch cfg.AuthMode() {
		case config.AuthSAS:
			cs, err := iothub.ParseConnectionString(cfg.IoTHub.ConnectionString)
			if err != nil {
				return nil, fmt.Errorf("iotHub.connectionString: %w", err)
			}
			auth = iothub.NewSAS(cs)
		default:
			e, err := iothub.NewDefaultEntra()
			if err != nil {
				return nil, fmt.Errorf("iotHub.auth: %w", err)
			}
			auth = e
		}
	}

	var override *url.URL
	if cfg.IoTHub.ServiceURL != "" {
		override, err = url.Parse(cfg.IoTHub.ServiceURL)
		if err != nil {
			return nil, fmt.Errorf("iotHub.serviceURL: %w", err)
		}
	}
	ua := userAgent()
	clients := map[string]*iothub.Client{}
	o := &hubOpener{targets: map[string]target{}, responseTimeout: time.Duration(cfg.MethodResponseTimeout), metrics: m}
	for _, c := range cfg.Cameras {
		host := strings.ToLower(cfg.HubHost(c))
		cl, ok := clients[host]
		if !ok {
			base := override
			if base == nil {
				base = &url.URL{Scheme: "https", Host: host}
			}
			cl = &iothub.Client{BaseURL: base, Auth: auth, HTTPClient: hc, UserAgent: ua}
			clients[host] = cl
		}
		o.targets[c.Name] = target{client: cl, deviceID: c.DeviceID, moduleID: c.ModuleID, localPort: c.LocalPort}
	}
	return o, nil
}

// publicURL returns the configured public URL, or one derived from the
// websocket listener's address.
func (a *App) publicURL() (*url.URL, error) {
	cfg := a.Config
	if cfg.PublicURL != "" {
		u, err := url.Parse(strings.TrimRight(cfg.PublicURL, "/"))
		if err != nil {
			return nil, fmt.Errorf("publicURL: %w", err)
		}
		return u, nil
	}
	scheme := "wss"
	if cfg.InsecureWS {
		scheme = "ws"
	}
	addr := a.wsLn.Addr().(*net.TCPAddr)
	host := "127.0.0.1"
	if !addr.IP.IsUnspecified() {
		host = addr.IP.String()
	} else {
		a.Logger.Warn("publicURL is not set; modules are told to dial the loopback address", "websocket_listen", addr.String())
	}
	return &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, fmt.Sprint(addr.Port))}, nil
}

// tlsConfig returns the websocket endpoint's TLS configuration, or nil with
// insecureWS.
func (a *App) tlsConfig(public *url.URL) (*tls.Config, error) {
	cfg := a.Config
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Websockets upgrade over HTTP/1.1 only.
		NextProtos: []string{"http/1.1"},
	}
	switch {
	case cfg.InsecureWS:
		return nil, nil
	case cfg.SelfSigned:
		hosts := []string{public.Hostname(), "localhost", "127.0.0.1", "::1"}
		if h, _, err := net.SplitHostPort(cfg.WebsocketListen); err == nil && h != "" {
			hosts = append(hosts, h)
		}
		pair, certPEM, err := selfSigned(hosts, time.Now())
		if err != nil {
			return nil, fmt.Errorf("selfSigned: %w", err)
		}
		path := cfg.SelfSignedCertFile
		if path == "" {
			f, err := os.CreateTemp("", "relay-ca-*.pem")
			if err != nil {
				return nil, fmt.Errorf("selfSignedCertFile: %w", err)
			}
			f.Close()
			path = f.Name()
			a.tempCA = path
		}
		if err := os.WriteFile(path, certPEM, 0o644); err != nil {
			return nil, fmt.Errorf("selfSignedCertFile: %w", err)
		}
		a.ready.CAFile = path
		conf.Certificates = []tls.Certificate{pair}
	default:
		// Reloaded when the files change, so certificates rotate without a
		// restart (cert-manager, certbot).
		r := &certfile.Reloader{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, Logger: a.Logger}
		if err := r.Initialize(); err != nil {
			return nil, fmt.Errorf("tlsCertFile/tlsKeyFile: %w", err)
		}
		conf.GetCertificate = r.GetCertificate
	}
	return conf, nil
}

// rtspURL is the URL a player uses for path on a listener at addr.
func rtspURL(addr, path string) string {
	return "rtsp://" + localHostPort(addr) + "/" + strings.TrimLeft(path, "/")
}

// rtspsURL is rtspURL over TLS; empty when addr is.
func rtspsURL(addr, path string) string {
	if addr == "" {
		return ""
	}
	return "rtsps://" + localHostPort(addr) + "/" + strings.TrimLeft(path, "/")
}

func localHostPort(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func userAgent() string {
	v := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return fmt.Sprintf("rtsptunnel-relay/%s (%s; %s/%s)", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
