package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/auth"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/iothub"
)

// Config is the relay's configuration. Each field is one setting; its json
// tag is the setting's name in the config file and in error messages. The
// settings table in settings.go documents each one, with its flag and
// environment variable, and is checked against this struct by a test.
type Config struct {
	// PublicURL is the websocket base URL modules dial, e.g.
	// "wss://relay.example.com:8443". Session URLs are
	// PublicURL + "/tunnels/<session id>". Empty means derived from the
	// websocket listener's actual address (local use only).
	PublicURL string `json:"publicURL"`
	// WebsocketListen is the address the websocket endpoint listens on.
	WebsocketListen string `json:"websocketListen"`
	// TLSCertFile and TLSKeyFile are the websocket endpoint's PEM
	// certificate chain and key.
	TLSCertFile string `json:"tlsCertFile"`
	TLSKeyFile  string `json:"tlsKeyFile"`
	// SelfSigned generates a self-signed certificate at start-up instead.
	SelfSigned bool `json:"selfSigned"`
	// SelfSignedCertFile is where the generated certificate's PEM is
	// written (for the module's RTSPTUNNEL_REMOTECAFILE); empty means a new
	// file in the temporary directory, reported in the ready line.
	SelfSignedCertFile string `json:"selfSignedCertFile"`
	// InsecureWS serves plain ws:// (no TLS), e.g. behind a TLS-terminating
	// proxy or for tests.
	InsecureWS bool `json:"insecureWS"`
	// MetricsListen is the address of /metrics and /healthz; empty disables.
	MetricsListen string `json:"metricsListen"`
	// RTSPListen is the address of the RTSP listener for shared cameras,
	// routed by path: rtsp://<host>:<port>/<camera name>.
	RTSPListen string `json:"rtspListen"`
	// RTSPSListen is the address of the RTSPS (RTSP over TLS) listener, with
	// the websocket endpoint's certificate; empty disables.
	RTSPSListen string `json:"rtspsListen"`
	// WebRTCUDPListen is the one UDP address for every browser viewer's
	// media (ICE UDP mux); empty disables UDP. With WebRTCTCPListen empty
	// too, browser playback (WHEP) is off.
	WebRTCUDPListen string `json:"webrtcUDPListen"`
	// WebRTCTCPListen is the one TCP address for ICE-TCP (browsers whose
	// UDP is blocked); empty disables it.
	WebRTCTCPListen string `json:"webrtcTCPListen"`
	// WebRTCPublicIPs are the relay's public addresses, comma-separated,
	// advertised to browsers instead of the listeners' own (1:1 NAT).
	WebRTCPublicIPs string `json:"webrtcPublicIPs"`
	// WebTokenTTL is the lifetime of the page's bearer token (the page
	// renews it while open).
	WebTokenTTL Duration `json:"webTokenTTL"`
	// Realm is the authentication realm players see; user entries' HA1
	// values are bound to it.
	Realm string `json:"realm"`
	// AllowAnonymous lets players watch without credentials.
	AllowAnonymous bool `json:"allowAnonymous"`
	// Users are the accounts that may watch.
	Users []User `json:"users"`
	// Linger is how long a shared camera's upstream stays open after its
	// last viewer left.
	Linger Duration `json:"linger"`
	// ReconnectWindow bounds how long viewers wait while a shared upstream
	// reconnects after the tunnel or the camera dropped.
	ReconnectWindow Duration `json:"reconnectWindow"`
	// IdleTimeout ends an upstream (shared) or a passthrough session that
	// has received nothing from the camera for this long.
	IdleTimeout Duration `json:"idleTimeout"`
	// MaxSessionDuration ends a player's session after this long; 0 means
	// no limit.
	MaxSessionDuration Duration `json:"maxSessionDuration"`
	// MaxPlayersPerCamera limits concurrent players per camera; 0 means no
	// limit.
	MaxPlayersPerCamera int `json:"maxPlayersPerCamera"`
	// MaxPlayers limits concurrent players in total; 0 means no limit.
	MaxPlayers int `json:"maxPlayers"`
	// PingInterval is how often the relay pings each module websocket; 0
	// disables pings.
	PingInterval Duration `json:"pingInterval"`
	// PingTimeout is how long a ping waits for its pong before the module
	// is taken for dead.
	PingTimeout Duration `json:"pingTimeout"`
	// MethodResponseTimeout is tunnelOpen's responseTimeoutInSeconds.
	MethodResponseTimeout Duration `json:"methodResponseTimeout"`
	// SessionWaitTimeout bounds the time from a player's connect until the
	// module's websocket is up.
	SessionWaitTimeout Duration `json:"sessionWaitTimeout"`
	// NotOnlineRetry is how long a tunnelOpen that IoT Hub answers 404103
	// (the module not connected or not subscribed to methods, as for a
	// moment while it renews its token) is called again; 0 never.
	NotOnlineRetry Duration `json:"notOnlineRetry"`
	// TokenTTL is how long a session token stays valid.
	TokenTTL Duration `json:"tokenTTL"`
	// LogLevel is debug, info, warn (or warning) or error.
	LogLevel string `json:"logLevel"`
	// LogFormat is json (the default: the relay runs on a server, not under
	// IoT Edge), syslog (IoT Edge's "<N> timestamp [LVL] - message" lines)
	// or text.
	LogFormat string `json:"logFormat"`
	// IoTHub selects how the relay calls IoT Hub.
	IoTHub IoTHub `json:"iotHub"`
	// Cameras lists the cameras the relay serves.
	Cameras []Camera `json:"cameras"`
}

// IoTHub holds the IoT Hub service API settings.
type IoTHub struct {
	// Auth is "sas" (a service connection string), "entra" (Microsoft
	// Entra ID through azidentity's default credential chain) or empty:
	// sas when a connection string is set, entra otherwise.
	Auth string `json:"auth"`
	// ConnectionString is a service connection string
	// "HostName=..;SharedAccessKeyName=..;SharedAccessKey=..".
	ConnectionString string `json:"connectionString"`
	// ServiceURL replaces https://{iotHubHost} as the REST base URL, e.g.
	// the emulator's "https://127.0.0.2:44321".
	ServiceURL string `json:"serviceURL"`
	// CAFile is a PEM bundle trusted for the REST API in addition to the
	// system roots.
	CAFile string `json:"caFile"`
}

// User is one account that may watch. The file holds no clear-text
// password: HA1 serves RTSP Digest, Hash serves Basic (RTSPS only). "relay
// hash-password" prints both.
type User struct {
	// Name is the user name.
	Name string `json:"name"`
	// HA1 is MD5(name:realm:password) in hex, for Digest.
	HA1 string `json:"ha1"`
	// Hash is a bcrypt or argon2id hash of the password, for Basic.
	Hash string `json:"hash"`
}

// Camera modes.
const (
	ModeShared      = "shared"
	ModePassthrough = "passthrough"
)

// Camera is one camera behind an rtsptunnel module.
type Camera struct {
	// Name identifies the camera in logs, metrics and the ready line.
	Name string `json:"name"`
	// IoTHubHost is the hub's host name; empty means the connection
	// string's HostName.
	IoTHubHost string `json:"iotHubHost"`
	// DeviceID is the IoT Edge (or plain IoT) device.
	DeviceID string `json:"deviceId"`
	// ModuleID is the rtsptunnel module; empty for a plain device app.
	ModuleID string `json:"moduleId"`
	// LocalPort is tunnelOpen's localPort: the module's key for the camera.
	LocalPort int `json:"localPort"`
	// Mode is "shared" (default: one upstream per camera, fanned out to
	// every viewer) or "passthrough" (one tunnel per player, bytes spliced
	// unchanged).
	Mode string `json:"mode"`
	// RTSPPath is the camera's own stream path, requested through the
	// tunnel by a shared upstream.
	RTSPPath string `json:"rtspPath"`
	// Username is the camera's own RTSP user, for a shared upstream.
	Username string `json:"username"`
	// PasswordEnv names the environment variable holding the camera's
	// password.
	PasswordEnv string `json:"passwordEnv"`
	// PasswordFile is a file holding the camera's password.
	PasswordFile string `json:"passwordFile"`
	// Users lists who may watch: user names, or "*" for every user.
	Users []string `json:"users"`
	// Listen is the TCP address players connect to for a passthrough
	// camera.
	Listen string `json:"listen"`

	// password is the camera's password, read from PasswordEnv or
	// PasswordFile by Load. Never logged.
	password string
}

// Password returns the camera's own RTSP password, as read by Load.
func (c Camera) Password() string { return c.password }

// Shared reports whether the camera uses a shared upstream.
func (c Camera) Shared() bool { return c.Mode != ModePassthrough }

// Auth modes.
const (
	AuthSAS   = "sas"
	AuthEntra = "entra"
)

// PublicIPs returns webrtcPublicIPs as a list.
func (c *Config) PublicIPs() []string {
	var ips []string
	for ip := range strings.SplitSeq(c.WebRTCPublicIPs, ",") {
		if ip = strings.TrimSpace(ip); ip != "" {
			ips = append(ips, ip)
		}
	}
	return ips
}

// WebRTC reports whether browser playback is on.
func (c *Config) WebRTC() bool { return c.WebRTCUDPListen != "" || c.WebRTCTCPListen != "" }

// Default returns the configuration with every default applied.
func Default() *Config {
	return &Config{
		WebsocketListen:       ":8443",
		MetricsListen:         "127.0.0.1:9601",
		MethodResponseTimeout: Duration(15 * time.Second),
		SessionWaitTimeout:    Duration(20 * time.Second),
		NotOnlineRetry:        Duration(5 * time.Second),
		TokenTTL:              Duration(20 * time.Second),
		LogLevel:              "info",
		LogFormat:             "json",
		RTSPListen:            ":8554",
		Realm:                 "rtsptunnel",
		Linger:                Duration(10 * time.Second),
		ReconnectWindow:       Duration(30 * time.Second),
		IdleTimeout:           Duration(20 * time.Second),
		MaxPlayersPerCamera:   32,
		MaxPlayers:            256,
		PingInterval:          Duration(10 * time.Second),
		PingTimeout:           Duration(10 * time.Second),
		WebTokenTTL:           Duration(15 * time.Minute),
	}
}

var (
	cameraName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	userName   = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)
)

// Validate checks every setting and returns all problems joined, each
// naming its setting.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}

	// Websocket endpoint and TLS.
	if err := checkAddr(c.WebsocketListen, false); err != nil {
		bad("websocketListen", "%v", err)
	}
	modes := 0
	if c.TLSCertFile != "" || c.TLSKeyFile != "" {
		modes++
		if c.TLSCertFile == "" {
			bad("tlsCertFile", "required when tlsKeyFile is set")
		}
		if c.TLSKeyFile == "" {
			bad("tlsKeyFile", "required when tlsCertFile is set")
		}
	}
	if c.SelfSigned {
		modes++
	}
	if c.InsecureWS {
		modes++
	}
	switch {
	case modes == 0:
		bad("tlsCertFile", "required: set tlsCertFile and tlsKeyFile, or selfSigned, or insecureWS")
	case modes > 1:
		bad("insecureWS", "tlsCertFile/tlsKeyFile, selfSigned and insecureWS are mutually exclusive")
	}
	if c.SelfSignedCertFile != "" && !c.SelfSigned {
		bad("selfSignedCertFile", "only meaningful with selfSigned")
	}
	if c.PublicURL != "" {
		if err := checkPublicURL(c.PublicURL, c.InsecureWS); err != nil {
			bad("publicURL", "%v", err)
		}
	}
	if c.MetricsListen != "" {
		if err := checkAddr(c.MetricsListen, false); err != nil {
			bad("metricsListen", "%v", err)
		}
	}

	// Timing.
	if d := time.Duration(c.MethodResponseTimeout); d < 5*time.Second || d > 300*time.Second {
		bad("methodResponseTimeout", "must be between 5s and 300s (IoT Hub's range), got %v", d)
	}
	if d := time.Duration(c.SessionWaitTimeout); d <= 0 || d > 10*time.Minute {
		bad("sessionWaitTimeout", "must be between 1ns and 10m, got %v", d)
	}
	if d := time.Duration(c.TokenTTL); d <= 0 || d > 10*time.Minute {
		bad("tokenTTL", "must be between 1ns and 10m, got %v", d)
	}
	for _, l := range []struct {
		name string
		v    int
	}{{"maxPlayersPerCamera", c.MaxPlayersPerCamera}, {"maxPlayers", c.MaxPlayers}} {
		if l.v < 0 {
			bad(l.name, "must be 0 (no limit) or more, got %d", l.v)
		}
	}
	for _, d := range []struct {
		name     string
		v        Duration
		min, max time.Duration
	}{
		{"linger", c.Linger, 0, time.Hour},
		{"reconnectWindow", c.ReconnectWindow, 0, time.Hour},
		{"notOnlineRetry", c.NotOnlineRetry, 0, 10 * time.Minute},
		{"idleTimeout", c.IdleTimeout, time.Second, time.Hour},
		{"maxSessionDuration", c.MaxSessionDuration, 0, 30 * 24 * time.Hour},
		{"pingInterval", c.PingInterval, 0, time.Hour},
		{"pingTimeout", c.PingTimeout, 0, time.Hour},
	} {
		if time.Duration(d.v) < d.min || time.Duration(d.v) > d.max {
			bad(d.name, "must be between %v and %v, got %v", d.min, d.max, time.Duration(d.v))
		}
	}
	if c.PingInterval > 0 && c.PingTimeout <= 0 {
		bad("pingTimeout", "must be positive when pingInterval is set")
	}

	// Players.
	if err := checkAddr(c.RTSPListen, false); err != nil {
		bad("rtspListen", "%v", err)
	}
	if c.RTSPSListen != "" {
		if err := checkAddr(c.RTSPSListen, false); err != nil {
			bad("rtspsListen", "%v", err)
		} else if c.InsecureWS {
			bad("rtspsListen", "needs a certificate: set tlsCertFile and tlsKeyFile or selfSigned (not insecureWS)")
		}
	}
	for _, l := range []struct{ name, addr string }{{"webrtcUDPListen", c.WebRTCUDPListen}, {"webrtcTCPListen", c.WebRTCTCPListen}} {
		if l.addr != "" {
			if err := checkAddr(l.addr, false); err != nil {
				bad(l.name, "%v", err)
			}
		}
	}
	if c.WebRTCPublicIPs != "" {
		if c.WebRTCUDPListen == "" && c.WebRTCTCPListen == "" {
			bad("webrtcPublicIPs", "needs webrtcUDPListen or webrtcTCPListen")
		}
		for _, ip := range c.PublicIPs() {
			if a, err := netip.ParseAddr(ip); err != nil || a.Zone() != "" {
				bad("webrtcPublicIPs", "must be comma-separated IP addresses, got %q", ip)
			}
		}
	}
	if time.Duration(c.WebTokenTTL) < time.Minute || time.Duration(c.WebTokenTTL) > 24*time.Hour {
		bad("webTokenTTL", "must be between 1m0s and 24h0m0s, got %v", time.Duration(c.WebTokenTTL))
	}
	if c.Realm == "" || strings.ContainsAny(c.Realm, "\"\\\r\n") {
		bad("realm", "must be non-empty and free of quotes, backslashes and line breaks, got %q", c.Realm)
	}
	userNames := map[string]int{}
	for i, u := range c.Users {
		p := fmt.Sprintf("users[%d]", i)
		if !userName.MatchString(u.Name) {
			bad(p+".name", "must be 1..64 letters, digits, '.', '_', '@' or '-', got %q", u.Name)
		} else if j, dup := userNames[u.Name]; dup {
			bad(p+".name", "duplicate of users[%d].name %q", j, u.Name)
		} else {
			userNames[u.Name] = i
		}
		if err := auth.ValidateUser(auth.User{Name: u.Name, HA1: u.HA1, Hash: u.Hash}); err != nil {
			bad(p, "%v (make an entry with: relay hash-password --realm %q --user %s)", err, c.Realm, u.Name)
		}
	}
	if len(c.Users) == 0 && !c.AllowAnonymous {
		bad("users", "required: add users (relay hash-password makes an entry), or set allowAnonymous to let anyone watch")
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "warning", "error":
	default:
		bad("logLevel", "must be debug, info, warn (or warning) or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "syslog", "text":
	default:
		bad("logFormat", "must be json, syslog or text, got %q", c.LogFormat)
	}

	// IoT Hub.
	var cs *iothub.ConnectionString
	if c.IoTHub.ConnectionString != "" {
		var err error
		if cs, err = iothub.ParseConnectionString(c.IoTHub.ConnectionString); err != nil {
			bad("iotHub.connectionString", "%v", err)
		}
	}
	switch c.IoTHub.Auth {
	case "", AuthEntra:
	case AuthSAS:
		if c.IoTHub.ConnectionString == "" {
			bad("iotHub.connectionString", "required with auth %q (or set IOTHUB_SERVICE_CONNECTION_STRING)", AuthSAS)
		}
	default:
		bad("iotHub.auth", "must be %q, %q or empty, got %q", AuthSAS, AuthEntra, c.IoTHub.Auth)
	}
	if c.IoTHub.ServiceURL != "" {
		u, err := url.Parse(c.IoTHub.ServiceURL)
		switch {
		case err != nil:
			bad("iotHub.serviceURL", "not a URL")
		case u.Scheme != "https" || u.Host == "":
			bad("iotHub.serviceURL", "must be an absolute https:// URL, got %q", c.IoTHub.ServiceURL)
		case u.RawQuery != "" || u.Fragment != "":
			bad("iotHub.serviceURL", "must not have a query or fragment")
		}
	}
	useSAS := c.AuthMode() == AuthSAS

	// Cameras.
	if len(c.Cameras) == 0 {
		bad("cameras", "at least one camera is required")
	}
	names := map[string]int{}
	listens := map[string]int{}
	for i, cam := range c.Cameras {
		p := fmt.Sprintf("cameras[%d]", i)
		switch cam.Mode {
		case "", ModeShared:
			if cam.Listen != "" {
				bad(p+".listen", "only for mode %q: shared cameras are served on rtspListen at rtsp://<host>:<port>/%s; remove listen, or set mode %q to keep a port of its own (see the upgrade notes)", ModePassthrough, cam.Name, ModePassthrough)
			}
		case ModePassthrough:
			if cam.Username != "" || cam.PasswordEnv != "" || cam.PasswordFile != "" {
				bad(p+".username", "only for mode %q: in passthrough the player's own requests reach the camera", ModeShared)
			}
		default:
			bad(p+".mode", "must be %q or %q, got %q", ModeShared, ModePassthrough, cam.Mode)
		}
		if cam.PasswordEnv != "" && cam.PasswordFile != "" {
			bad(p+".passwordEnv", "passwordEnv and passwordFile are mutually exclusive")
		}
		if (cam.PasswordEnv != "" || cam.PasswordFile != "") && cam.Username == "" {
			bad(p+".username", "required with passwordEnv or passwordFile")
		}
		if len(cam.Users) == 0 && !c.AllowAnonymous {
			bad(p+".users", "required: list the users who may watch, or \"*\" for every user")
		}
		for _, u := range cam.Users {
			if _, ok := userNames[u]; !ok && u != "*" {
				bad(p+".users", "%q is not in users", u)
			}
		}
		if !cameraName.MatchString(cam.Name) {
			bad(p+".name", "must be 1..63 letters, digits, '.', '_' or '-', starting with a letter or digit, got %q", cam.Name)
		} else if j, dup := names[cam.Name]; dup {
			bad(p+".name", "duplicate of cameras[%d].name %q", j, cam.Name)
		} else {
			names[cam.Name] = i
		}
		if cam.DeviceID == "" {
			bad(p+".deviceId", "required")
		} else if err := checkID(cam.DeviceID); err != nil {
			bad(p+".deviceId", "%v", err)
		}
		if cam.ModuleID != "" {
			if err := checkID(cam.ModuleID); err != nil {
				bad(p+".moduleId", "%v", err)
			}
		}
		if cam.LocalPort < 1 || cam.LocalPort > 65535 {
			bad(p+".localPort", "must be 1..65535, got %d", cam.LocalPort)
		}
		if strings.ContainsAny(cam.RTSPPath, " \t\r\n?#") {
			bad(p+".rtspPath", "must not contain spaces, '?' or '#', got %q", cam.RTSPPath)
		}
		if cam.Listen == "" {
			if cam.Mode == ModePassthrough {
				bad(p+".listen", "required for mode %q (e.g. 127.0.0.1:8555)", ModePassthrough)
			}
		} else if err := checkAddr(cam.Listen, false); err != nil {
			bad(p+".listen", "%v", err)
		} else if _, port, _ := net.SplitHostPort(cam.Listen); port != "0" {
			if j, dup := listens[cam.Listen]; dup {
				bad(p+".listen", "same address as cameras[%d].listen", j)
			}
			listens[cam.Listen] = i
		}
		switch {
		case cam.IoTHubHost == "" && cs == nil:
			bad(p+".iotHubHost", "required when no service connection string is set")
		case cam.IoTHubHost != "" && !validHost(cam.IoTHubHost):
			bad(p+".iotHubHost", "must be a host name like myhub.azure-devices.net, got %q", cam.IoTHubHost)
		case useSAS && cs != nil && cam.IoTHubHost != "" && !strings.EqualFold(cam.IoTHubHost, cs.HostName):
			bad(p+".iotHubHost", "%q differs from the connection string's HostName %q; SAS auth covers one hub (use auth %q for several)", cam.IoTHubHost, cs.HostName, AuthEntra)
		}
	}
	return errors.Join(errs...)
}

// AuthMode resolves IoTHub.Auth: sas or entra.
func (c *Config) AuthMode() string {
	if c.IoTHub.Auth != "" {
		return c.IoTHub.Auth
	}
	if c.IoTHub.ConnectionString != "" {
		return AuthSAS
	}
	return AuthEntra
}

// HubHost returns the IoT Hub host for cam: its IoTHubHost, or the
// connection string's HostName. Call it only on a validated Config.
func (c *Config) HubHost(cam Camera) string {
	if cam.IoTHubHost != "" {
		return cam.IoTHubHost
	}
	if cs, err := iothub.ParseConnectionString(c.IoTHub.ConnectionString); err == nil {
		return cs.HostName
	}
	return ""
}

func checkAddr(addr string, hostRequired bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port, got %q", addr)
	}
	if hostRequired && host == "" {
		return fmt.Errorf("must name a host, got %q", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port must be 0..65535, got %q", port)
	}
	return nil
}

func checkPublicURL(s string, insecure bool) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %q", s)
	}
	switch {
	case u.Scheme == "ws" && !insecure:
		return fmt.Errorf("ws:// needs insecureWS; use wss://, got %q", s)
	case u.Scheme != "wss" && u.Scheme != "ws":
		return fmt.Errorf("must be a wss:// URL, got %q", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("must name a host, got %q", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("must not have user info, query or fragment, got %q", s)
	}
	return nil
}

// checkID applies IoT Hub's device/module id rules: up to 128 ASCII
// letters, digits and - . + % _ # * ? ! ( ) , : = @ $ '.
func checkID(id string) error {
	if len(id) > 128 {
		return fmt.Errorf("longer than 128 characters")
	}
	for _, r := range id {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-.+%_#*?!(),:=@$'", r)) {
			continue
		}
		return fmt.Errorf("character %q is not allowed in IoT Hub ids", r)
	}
	return nil
}

func validHost(h string) bool {
	if strings.ContainsAny(h, "/:@ ?#") {
		return false
	}
	return h != ""
}
