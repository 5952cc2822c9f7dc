package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
)

// setting documents one configuration field. The table below is the one
// place where flags and environment variables are named; a test checks that
// it covers every field of Config and nothing else.
type setting struct {
	Path string // JSON path in the config file; "cameras[]." for camera fields
	Flag string // command-line flag without dashes; empty for none
	Arg  string // flag argument name in --help
	Env  string // environment variable; empty for none
	Help string
}

// EnvVars lists the environment variables the relay reads. They are the
// ones the IoT Hub emulator writes into its service.env.
var EnvVars = []string{"IOTHUB_SERVICE_CONNECTION_STRING", "IOTHUB_SERVICE_URL", "IOTHUB_CA_FILE"}

var settings = []setting{
	{"publicURL", "public-url", "URL", "", "websocket base URL that modules dial, wss://host[:port][/prefix]; a session's URL is <publicURL>/tunnels/<session id>. Default: derived from the websocket listener's address (local use only)"},
	{"websocketListen", "ws-listen", "ADDR", "", "listen address of the websocket endpoint (default \":8443\")"},
	{"tlsCertFile", "tls-cert", "FILE", "", "PEM certificate chain of the websocket endpoint"},
	{"tlsKeyFile", "tls-key", "FILE", "", "PEM private key of the websocket endpoint"},
	{"selfSigned", "self-signed", "", "", "generate a self-signed certificate at start-up (local use); its PEM goes to selfSignedCertFile for the module's RTSPTUNNEL_REMOTECAFILE"},
	{"selfSignedCertFile", "self-signed-cert-file", "FILE", "", "where --self-signed writes the certificate PEM (default: a new file in the temporary directory, named in the ready line as caFile)"},
	{"insecureWS", "insecure-ws", "", "", "serve plain ws:// without TLS (behind a TLS-terminating proxy, or tests); the module must also allow insecure ws"},
	{"metricsListen", "metrics-listen", "ADDR", "", "listen address of /metrics and /healthz; empty disables (default \"127.0.0.1:9601\")"},
	{"methodResponseTimeout", "method-timeout", "DURATION", "", "tunnelOpen responseTimeoutInSeconds, 5s..300s (default 15s)"},
	{"sessionWaitTimeout", "session-wait", "DURATION", "", "how long a player waits for the module's websocket before it is disconnected (default 20s)"},
	{"notOnlineRetry", "not-online-retry", "DURATION", "", "how long a tunnelOpen that IoT Hub answers 404103 (module not connected or not subscribed to methods, as for a moment while it renews its token) is called again with backoff; at most 3/4 of sessionWaitTimeout; 0 = never (default 5s)"},
	{"tokenTTL", "token-ttl", "DURATION", "", "lifetime of a session's single-use token (default 20s)"},
	{"rtspListen", "rtsp-listen", "ADDR", "", "RTSP listener for shared cameras, routed by path rtsp://<host>:<port>/<camera name> (default \":8554\")"},
	{"rtspsListen", "rtsps-listen", "ADDR", "", "RTSPS (RTSP over TLS) listener with the websocket endpoint's certificate; empty disables (default empty)"},
	{"webrtcUDPListen", "webrtc-udp-listen", "ADDR", "", "UDP address for every browser viewer's media (WebRTC, one port for all peers), e.g. \":8189\"; empty disables UDP. Browser playback (the page at / and WHEP at /whep/<camera> on the websocket listener) needs this or webrtcTCPListen (default empty: off)"},
	{"webrtcTCPListen", "webrtc-tcp-listen", "ADDR", "", "TCP address for ICE-TCP, for browsers whose UDP is blocked, e.g. \":8189\"; empty disables (default empty)"},
	{"webrtcPublicIPs", "webrtc-public-ips", "IPS", "", "comma-separated public IP addresses browsers reach the relay at (1:1 NAT, e.g. a cloud VM's); they replace the listeners' addresses in ICE candidates (default empty: the listeners' own)"},
	{"webTokenTTL", "web-token-ttl", "DURATION", "", "lifetime of the page's bearer token from POST /login, 1m..24h; the open page renews it (default 15m)"},
	{"realm", "realm", "NAME", "", "authentication realm players see; users' ha1 values are bound to it (default \"rtsptunnel\")"},
	{"allowAnonymous", "allow-anonymous", "", "", "let players watch without credentials (logged loudly at start-up); default false"},
	{"users", "", "", "", "accounts that may watch: [{\"name\",\"ha1\",\"hash\"}], made by relay hash-password; config file only"},
	{"users[].name", "", "", "", "user name: 1..64 letters, digits, . _ @ -"},
	{"users[].ha1", "", "", "", "MD5(name:realm:password) in hex, for RTSP Digest; password-equivalent for this realm (see SECURITY.md)"},
	{"users[].hash", "", "", "", "bcrypt or argon2id hash of the password, for Basic (RTSPS only)"},
	{"linger", "linger", "DURATION", "", "how long a shared camera's tunnel stays open after its last viewer left (default 10s)"},
	{"reconnectWindow", "reconnect-window", "DURATION", "", "how long viewers wait while a shared upstream reconnects after the tunnel or camera dropped; 0 ends them at once (default 30s)"},
	{"idleTimeout", "idle-timeout", "DURATION", "", "end an upstream or passthrough session that received nothing from the camera for this long, 1s..1h (default 20s)"},
	{"maxSessionDuration", "max-session-duration", "DURATION", "", "end a player's session after this long; 0 = no limit (default 0)"},
	{"maxPlayersPerCamera", "max-players-per-camera", "N", "", "concurrent players per camera, 0 = no limit (default 32)"},
	{"maxPlayers", "max-players", "N", "", "concurrent players in total, 0 = no limit (default 256)"},
	{"pingInterval", "ping-interval", "DURATION", "", "websocket ping to each module this often; 0 disables (default 10s)"},
	{"pingTimeout", "ping-timeout", "DURATION", "", "a module that does not answer a ping within this is taken for dead: dead peers are found within pingInterval+pingTimeout (default 10s)"},
	{"logLevel", "log-level", "LEVEL", "", "debug, info, warn (or warning) or error (default info)"},
	{"logFormat", "log-format", "FORMAT", "", "json (default), syslog (each line starts with its syslog severity <N> and a timestamp, the format IoT Edge filters by level) or text"},
	{"iotHub.auth", "iothub-auth", "MODE", "", "sas (service connection string) or entra (Microsoft Entra ID, azidentity default credential chain, scope https://iothubs.azure.net/.default); default: sas when a connection string is set, else entra"},
	{"iotHub.connectionString", "iothub-connection-string", "STRING", "IOTHUB_SERVICE_CONNECTION_STRING", "IoT Hub service connection string HostName=..;SharedAccessKeyName=..;SharedAccessKey=.. (policy with ServiceConnect); prefer the environment variable, flags are visible to other users"},
	{"iotHub.serviceURL", "iothub-service-url", "URL", "IOTHUB_SERVICE_URL", "IoT Hub REST base URL replacing https://<iotHubHost>, e.g. the emulator's https://127.0.0.2:44321"},
	{"iotHub.caFile", "iothub-ca-file", "FILE", "IOTHUB_CA_FILE", "PEM bundle trusted for the IoT Hub REST API in addition to the system roots"},
	{"cameras", "camera", "SPEC", "", "a camera as comma-separated key=value pairs with the cameras[] keys below, e.g. name=door,deviceId=edge1,moduleId=rtsptunnel,localPort=554,rtspPath=stream1,users=alice+bob (users separated by +); repeatable; replaces the config file's cameras"},
	{"cameras[].name", "", "", "", "camera name for logs, metrics and the ready line (letters, digits, . _ -); required, unique"},
	{"cameras[].iotHubHost", "", "", "", "IoT Hub host name, e.g. myhub.azure-devices.net; default: the connection string's HostName"},
	{"cameras[].deviceId", "", "", "", "device id of the IoT Edge device (or plain device); required"},
	{"cameras[].moduleId", "", "", "", "module id of the rtsptunnel module; empty calls the method on the device itself"},
	{"cameras[].localPort", "", "", "", "tunnelOpen localPort, the module's key for this camera, 1..65535; required"},
	{"cameras[].mode", "", "", "", "shared (default): one tunnel and one RTSP session to the camera, fanned out to every viewer; passthrough: one tunnel per player, bytes spliced unchanged"},
	{"cameras[].rtspPath", "", "", "", "the camera's own stream path, e.g. stream1; shared mode requests it through the tunnel"},
	{"cameras[].username", "", "", "", "the camera's own RTSP user (shared mode)"},
	{"cameras[].passwordEnv", "", "", "", "environment variable holding the camera's own RTSP password (shared mode; never logged)"},
	{"cameras[].passwordFile", "", "", "", "file holding the camera's own RTSP password (shared mode; never logged)"},
	{"cameras[].users", "", "", "", "who may watch: user names, or \"*\" for every user; required unless allowAnonymous"},
	{"cameras[].listen", "", "", "", "passthrough mode only: TCP address where players connect for this camera, e.g. 127.0.0.1:8555 (port 0 picks a free port)"},
}

// Load builds the configuration from args (the command line without the
// program name) and getenv: defaults, then the --config file, then the
// environment, then flags, then Validate. With -h or --help it writes the
// usage to out and returns flag.ErrHelp. Errors name the offending flag or
// setting.
func Load(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, help is written below
	configPath := fs.String("config", "", "JSON config file (strict: unknown keys are errors)")
	var sets []assignment
	var cams []string
	for _, s := range settings {
		switch {
		case s.Flag == "":
		case s.Path == "cameras":
			fs.Func(s.Flag, s.Help, func(v string) error { cams = append(cams, v); return nil })
		default:
			fs.Var(&flagValue{path: s.Path, sets: &sets}, s.Flag, s.Help)
		}
	}
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeUsage(out, fs)
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (settings are flags or the --config file)", fs.Arg(0))
	}

	cfg := Default()
	if *configPath != "" {
		data, err := os.ReadFile(*configPath)
		if err != nil {
			return nil, fmt.Errorf("failed to read config: %w", err)
		}
		if err := Decode(data, cfg); err != nil {
			return nil, fmt.Errorf("config file %s: %w", *configPath, err)
		}
	}
	for _, s := range settings {
		if s.Env == "" {
			continue
		}
		if v := getenv(s.Env); v != "" {
			if err := setPath(cfg, s.Path, v); err != nil {
				return nil, fmt.Errorf("%s (from %s): %w", s.Path, s.Env, err)
			}
		}
	}
	for _, a := range sets {
		if err := setPath(cfg, a.path, a.value); err != nil {
			return nil, fmt.Errorf("%s: %w", a.path, err) // checked at parse time already
		}
	}
	if len(cams) > 0 {
		cfg.Cameras = nil
		for i, spec := range cams {
			cam, err := ParseCamera(spec)
			if err != nil {
				return nil, fmt.Errorf("--camera #%d: %w", i+1, err)
			}
			cfg.Cameras = append(cfg.Cameras, cam)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.loadSecrets(getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// loadSecrets reads each camera's password from its passwordEnv or
// passwordFile. Errors name the setting, never the value.
func (c *Config) loadSecrets(getenv func(string) string) error {
	var errs []error
	for i := range c.Cameras {
		cam := &c.Cameras[i]
		switch {
		case cam.PasswordEnv != "":
			cam.password = getenv(cam.PasswordEnv)
			if cam.password == "" {
				errs = append(errs, fmt.Errorf("cameras[%d].passwordEnv: environment variable %s is unset or empty", i, cam.PasswordEnv))
			}
		case cam.PasswordFile != "":
			b, err := os.ReadFile(cam.PasswordFile)
			if err != nil {
				errs = append(errs, fmt.Errorf("cameras[%d].passwordFile: %w", i, err))
				continue
			}
			cam.password = strings.TrimRight(string(b), "\r\n")
			if cam.password == "" {
				errs = append(errs, fmt.Errorf("cameras[%d].passwordFile: %s is empty", i, cam.PasswordFile))
			}
		}
	}
	return errors.Join(errs...)
}

// Decode decodes a JSON config file over cfg (which normally holds the
// defaults). Unknown keys and wrong types are errors naming their path.
func Decode(data []byte, cfg *Config) error {
	var probe any
	if err := json.Unmarshal(data, &probe); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := position(data, se.Offset)
			return fmt.Errorf("invalid JSON at line %d, column %d: %w", line, col, err)
		}
		return fmt.Errorf("invalid JSON: %w", err)
	}
	return decodeStrict(data, cfg)
}

// ParseCamera parses a --camera spec: comma-separated key=value pairs whose
// keys are the cameras[] setting names.
func ParseCamera(spec string) (Camera, error) {
	var cam Camera
	fields := jsonFields(reflect.TypeFor[Camera]())
	obj := map[string]any{}
	for pair := range strings.SplitSeq(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok {
			return cam, fmt.Errorf("%q is not key=value", pair)
		}
		i, ok := fields[k]
		if !ok {
			return cam, fmt.Errorf("%s: unknown setting", k)
		}
		switch reflect.TypeFor[Camera]().Field(i).Type.Kind() {
		case reflect.Slice:
			obj[k] = strings.Split(v, "+")
			continue
		case reflect.Int:
			n, err := strconv.Atoi(v)
			if err != nil {
				return cam, fmt.Errorf("%s: must be an integer, got %q", k, v)
			}
			obj[k] = n
		default:
			obj[k] = v
		}
	}
	data, err := json.Marshal(obj)
	if err != nil {
		return cam, err
	}
	return cam, decodeStrict(data, &cam)
}

type assignment struct{ path, value string }

// flagValue records a flag's value for application after the file and the
// environment; Set checks the value's type right away.
type flagValue struct {
	path string
	sets *[]assignment
}

func (f *flagValue) String() string { return "" }

func (f *flagValue) Set(v string) error {
	if err := setPath(Default(), f.path, v); err != nil {
		return err
	}
	*f.sets = append(*f.sets, assignment{f.path, v})
	return nil
}

// IsBoolFlag lets boolean settings be given as a bare --flag.
func (f *flagValue) IsBoolFlag() bool {
	v, err := fieldByPath(Default(), f.path)
	return err == nil && v.Kind() == reflect.Bool
}

// setPath sets the field at a dotted JSON path from its text form.
func setPath(cfg *Config, path, value string) error {
	v, err := fieldByPath(cfg, path)
	if err != nil {
		return err
	}
	if d, ok := v.Addr().Interface().(*Duration); ok {
		return d.Set(value)
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(value)
	case reflect.Bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("must be true or false, got %q", value)
		}
		v.SetBool(b)
	case reflect.Int:
		n, err := strconv.Atoi(value)
		if err != nil {
			return fmt.Errorf("must be an integer, got %q", value)
		}
		v.SetInt(int64(n))
	default:
		return fmt.Errorf("cannot be set from text")
	}
	return nil
}

func fieldByPath(cfg *Config, path string) (reflect.Value, error) {
	v := reflect.ValueOf(cfg).Elem()
	for part := range strings.SplitSeq(path, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, fmt.Errorf("no setting %q", path)
		}
		i, ok := jsonFields(v.Type())[part]
		if !ok {
			return reflect.Value{}, fmt.Errorf("no setting %q", path)
		}
		v = v.Field(i)
	}
	return v, nil
}

func position(data []byte, offset int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < offset && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

// Example is a complete config file, shown by --help and checked by a test.
const Example = `{
  "publicURL": "wss://relay.example.com:8443",
  "websocketListen": ":8443",
  "tlsCertFile": "/etc/relay/tls.crt",
  "tlsKeyFile": "/etc/relay/tls.key",
  "rtspListen": ":8554",
  "rtspsListen": ":8322",
  "metricsListen": "127.0.0.1:9601",
  "webrtcUDPListen": ":8189",
  "webrtcTCPListen": ":8189",
  "webrtcPublicIPs": "203.0.113.7",
  "webTokenTTL": "15m",
  "realm": "rtsptunnel",
  "users": [
    {"name": "alice", "ha1": "db0b043deb53edb1d118a2fc924c8d53",
     "hash": "$2a$12$Bi.07NpugoWngIQOEbRr.uoq5xRwrZB5/caqkIGWoSKnvh3HzcGX2"}
  ],
  "linger": "10s",
  "reconnectWindow": "30s",
  "idleTimeout": "20s",
  "maxPlayersPerCamera": 32,
  "maxPlayers": 256,
  "pingInterval": "10s",
  "pingTimeout": "10s",
  "methodResponseTimeout": "15s",
  "sessionWaitTimeout": "20s",
  "notOnlineRetry": "5s",
  "tokenTTL": "20s",
  "logLevel": "info",
  "logFormat": "json",
  "iotHub": {
    "auth": "sas",
    "connectionString": "HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0",
    "serviceURL": "",
    "caFile": ""
  },
  "cameras": [
    {"name": "door", "iotHubHost": "myhub.azure-devices.net", "deviceId": "edge1",
     "moduleId": "rtsptunnel", "localPort": 554, "rtspPath": "stream1",
     "username": "viewer", "passwordEnv": "DOOR_CAMERA_PASSWORD", "users": ["alice"]},
    {"name": "yard", "deviceId": "pi-yard", "moduleId": "", "localPort": 554,
     "mode": "passthrough", "listen": "127.0.0.1:8555", "users": ["*"]}
  ]
}`

func writeUsage(out io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(out, `Usage: relay [flags]

relay is the self-hosted cloud side of rtsptunnel: a small media gateway for
cameras behind NAT. Players connect to rtsp://<host>:<rtspListen port>/<camera
name> (or RTSPS) and authenticate (Digest; Basic only over RTSPS). The first
viewer of a shared camera makes the relay mint a session (a single-use bearer
token and the URL <publicURL>/tunnels/<id>), call the tunnelOpen direct
method on the camera's rtsptunnel module through the IoT Hub service REST
API, wait for the module's websocket, check the token (a missing, wrong,
reused or expired token gets HTTP 401), and read the camera through the
tunnel as an RTSP client; every further viewer joins that stream. The tunnel
closes a linger after the last viewer leaves. Passthrough cameras keep a port
of their own and one tunnel per player, spliced byte for byte.

Subcommands: relay hash-password --user NAME [--realm REALM] prints a users[]
entry (ha1 and hash) for the password read from standard input; relay
healthcheck [--url URL] exits 0 when the relay's /healthz answers 200 (for
container health checks; default http://127.0.0.1:9601/healthz).

Settings are applied in the order: defaults, --config file, environment,
flags.

Flags:
`)
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		arg := "FILE"
		path := ""
		for _, s := range settings {
			if s.Flag == f.Name {
				arg, path = s.Arg, s.Path
			}
		}
		name := "--" + f.Name
		if arg != "" {
			name += " " + arg
		}
		if path != "" && path != "cameras" {
			path = " [" + path + "]"
		} else {
			path = ""
		}
		fmt.Fprintf(tw, "  %s\t%s%s\n", name, f.Usage, path)
	})
	fmt.Fprintf(tw, "  -h, --help\tshow this help\n")
	tw.Flush()

	fmt.Fprint(out, "\nConfig file settings (JSON keys):\n")
	tw = tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	for _, s := range settings {
		fmt.Fprintf(tw, "  %s\t%s\n", s.Path, s.Help)
	}
	tw.Flush()

	fmt.Fprint(out, "\nEnvironment (as written by the emulator's service.env):\n")
	tw = tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	for _, s := range settings {
		if s.Env != "" {
			fmt.Fprintf(tw, "  %s\t%s\n", s.Env, s.Path)
		}
	}
	tw.Flush()

	fmt.Fprintf(out, `
Example config file:
%s

Output: logs are JSON lines on stderr (tokens are never logged). When every
listener is up, one JSON line is written to stdout, for example:
  {"ready":true,"websocketURL":"wss://127.0.0.1:8443","websocketListen":"127.0.0.1:8443",
   "metricsURL":"http://127.0.0.1:9601/metrics","caFile":"/tmp/relay-ca-123.pem",
   "rtspListen":"127.0.0.1:8554","rtspsListen":"127.0.0.1:8322",
   "cameras":[{"name":"door","mode":"shared","rtspURL":"rtsp://127.0.0.1:8554/door"}]}
metricsURL and caFile are omitted when not applicable.

SIGTERM or SIGINT stops the listeners, closes every session and exits 0.
Exit status 2 means bad flags or configuration, 1 a start-up failure.
`, Example)
}
