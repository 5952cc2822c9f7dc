package settings

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"
)

// EnvPrefix is prepended to the upper-cased setting name to form its
// environment variable name.
const EnvPrefix = "RTSPTUNNEL_"

// Settings is the module's whole configuration: one field per setting.
//
// Tags, read by reflection (see fields.go):
//   - setting:"<name>[,envonly]" – the desired-property name; "envonly" marks a
//     setting that the twin cannot change.
//   - help:"..."                 – the description shown by --help and the README.
//   - min:"..." / max:"..."      – inclusive limits (for lists: of each element).
//   - enum:"a,b,c"               – the accepted values of a string.
//   - check:"<name>"             – a named validation from checks.go.
//
// Treat a Settings value as immutable; see the package documentation.
type Settings struct {
	Targets                Targets       `setting:"targets" check:"targets" help:"Camera for each localPort: {\"554\":\"192.168.10.21:554\"} (environment: also 554=host:554,5541=host2:554). When set, only these ports are served."`
	AllowedPorts           []int         `setting:"allowedPorts" min:"1" max:"65535" help:"When targets is empty, a localPort in this list is dialled on 127.0.0.1 (the original device-app behaviour)."`
	AllowedRemoteHosts     []string      `setting:"allowedRemoteHosts" check:"hostPattern" help:"Host names the websocket may connect to: exact names or *.suffix wildcards; empty allows any host. Whatever the list, loopback, link-local, unspecified, multicast and cloud metadata addresses (checked on the URL and after DNS) are reached only through a host named exactly here."`
	AllowInsecureWebSocket bool          `setting:"allowInsecureWebSocket" help:"Accept plain ws:// remote endpoints (testing only; the token then travels in clear text)."`
	RemoteCAFile           string        `setting:"remoteCAFile" check:"caFile" help:"PEM file of extra CA certificates trusted for remote endpoints, in addition to the system roots."`
	MaxSessions            int           `setting:"maxSessions" min:"1" max:"1000" help:"Maximum concurrent tunnels (including ones being opened); further tunnelOpen calls get 429."`
	DialTimeout            time.Duration `setting:"dialTimeout" min:"1ms" help:"Timeout for the TCP connection to the camera."`
	HandshakeTimeout       time.Duration `setting:"handshakeTimeout" min:"1ms" help:"Timeout for the websocket connection and handshake to the remote endpoint (TCP, proxy, TLS and HTTP upgrade)."`
	OpenTimeout            time.Duration `setting:"openTimeout" min:"1ms" max:"5m" help:"Bound on the whole tunnelOpen answer; keep it well under the caller's response timeout (IoT Hub default 30s)."`
	IdleTimeout            time.Duration `setting:"idleTimeout" min:"0s" help:"Close a tunnel when no bytes flowed either way for this long; 0 disables."`
	MaxSessionDuration     time.Duration `setting:"maxSessionDuration" min:"0s" help:"Close a tunnel after this long; 0 means unlimited."`
	PingInterval           time.Duration `setting:"pingInterval" min:"0s" help:"Interval of websocket pings that detect a dead remote peer; 0 disables."`
	PingTimeout            time.Duration `setting:"pingTimeout" min:"1ms" help:"A ping not answered within this time closes the tunnel (dead peer)."`
	SessionRetention       time.Duration `setting:"sessionRetention" min:"0s" max:"24h" help:"How long closed sessions stay in the reported properties."`
	LogLevel               string        `setting:"logLevel" enum:"debug,info,warn,warning,error" help:"Minimum level of log lines (warning is the same as warn)."`
	LogFormat              string        `setting:"logFormat,envonly" enum:"syslog,json,text" help:"Log line format: syslog starts each line with its syslog severity (<6> info, <4> warning, <3> error) and a timestamp, as IoT Edge's log methods (GetModuleLogs, UploadModuleLogs) expect to filter by level; json is one JSON object per line; text is key=value."`
	MetricsAddr            string        `setting:"metricsAddr" check:"listenAddr" help:"Listen address of the Prometheus /metrics and /healthz server; empty disables it. A change restarts only that server."`
	HubTransport           string        `setting:"hubTransport,envonly" enum:"mqtt,mqttws" help:"IoT Hub / edgeHub transport: MQTT over TLS, or MQTT over WebSockets (port 443, honours HTTPS_PROXY)."`
	HubPort                int           `setting:"hubPort,envonly" min:"0" max:"65535" help:"IoT Hub / edgeHub port; 0 means 8883 for mqtt and 443 for mqttws."`
	TokenLifetime          time.Duration `setting:"tokenLifetime,envonly" min:"2s" max:"24h" help:"Lifetime of the SAS tokens the module mints; each is renewed between 50% and 90% of it (at a moment with no method call in flight when one comes), on a new connection, without losing calls. Keep the default outside tests."`

	// start holds the values the process started with (defaults overridden by
	// the environment); a desired property set to null returns to them. Nil
	// means Defaults(). Set by FromEnv, carried along by Apply.
	start *Settings
}

// Defaults returns the default settings. This is the only place defaults are written.
func Defaults() Settings {
	return Settings{
		Targets:                Targets{},
		AllowedPorts:           []int{554},
		AllowedRemoteHosts:     []string{},
		AllowInsecureWebSocket: false,
		RemoteCAFile:           "",
		MaxSessions:            100,
		DialTimeout:            5 * time.Second,
		HandshakeTimeout:       10 * time.Second,
		OpenTimeout:            20 * time.Second,
		IdleTimeout:            60 * time.Second,
		MaxSessionDuration:     0,
		PingInterval:           15 * time.Second,
		PingTimeout:            10 * time.Second,
		SessionRetention:       60 * time.Second,
		LogLevel:               "info",
		LogFormat:              "syslog",
		MetricsAddr:            ":9600",
		HubTransport:           "mqtt",
		HubPort:                0,
		TokenLifetime:          time.Hour,
	}
}

// Targets maps a tunnelOpen localPort to the camera's "host:port".
type Targets map[int]string

// Target resolves a tunnelOpen localPort to the camera address to dial.
// With targets set, only mapped ports resolve; with no targets, a port in
// AllowedPorts resolves to 127.0.0.1:port. ok is false for any other port.
func (s Settings) Target(localPort int) (addr string, ok bool) {
	if len(s.Targets) > 0 {
		addr, ok = s.Targets[localPort]
		return addr, ok
	}
	for _, p := range s.AllowedPorts {
		if p == localPort {
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(localPort)), true
		}
	}
	return "", false
}

// SlogLevel returns LogLevel as a slog.Level (info for an unknown value).
func (s Settings) SlogLevel() slog.Level {
	switch s.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// EffectiveHubPort returns HubPort, or the transport's standard port when it is 0.
func (s Settings) EffectiveHubPort() int {
	switch {
	case s.HubPort != 0:
		return s.HubPort
	case s.HubTransport == "mqttws":
		return 443
	default:
		return 8883
	}
}

// RemoteRootCAs returns the roots trusted for remote endpoints: nil (meaning the
// system roots) when RemoteCAFile is empty, otherwise the system roots plus the
// certificates in that file. It reads the file on every call.
func (s Settings) RemoteRootCAs() (*x509.CertPool, error) {
	if s.RemoteCAFile == "" {
		return nil, nil
	}
	pemBytes, err := os.ReadFile(s.RemoteCAFile)
	if err != nil {
		return nil, fmt.Errorf("failed to read remote CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("failed to read remote CA file %q: no PEM certificate found", s.RemoteCAFile)
	}
	return pool, nil
}
