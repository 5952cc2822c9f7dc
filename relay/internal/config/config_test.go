package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// base is a valid config file that each case below breaks in one place.
const base = `{
  "selfSigned": true,
  "iotHub": {"connectionString": "HostName=hub.example;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0"},
  "users": [{"name": "alice", "ha1": "db0b043deb53edb1d118a2fc924c8d53", "hash": "$2a$12$Bi.07NpugoWngIQOEbRr.uoq5xRwrZB5/caqkIGWoSKnvh3HzcGX2"}],
  "cameras": [
    {"name": "a", "deviceId": "d1", "moduleId": "rtsptunnel", "localPort": 554, "mode": "passthrough", "users": ["*"], "listen": "127.0.0.1:8554"},
    {"name": "b", "deviceId": "d2", "localPort": 554, "mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"}
  ]
}`

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "relay.json")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv(string) string { return "" }

func TestLoadValid(t *testing.T) {
	cfg, err := Load([]string{"--config", writeFile(t, base)}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Cameras) != 2 || cfg.Cameras[1].DeviceID != "d2" || cfg.Cameras[1].ModuleID != "" {
		t.Fatalf("cameras = %+v", cfg.Cameras)
	}
	if cfg.AuthMode() != AuthSAS || cfg.HubHost(cfg.Cameras[0]) != "hub.example" {
		t.Fatalf("auth %q host %q", cfg.AuthMode(), cfg.HubHost(cfg.Cameras[0]))
	}
	if time.Duration(cfg.SessionWaitTimeout) != 20*time.Second || cfg.WebsocketListen != ":8443" {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestExampleIsValid(t *testing.T) {
	cfg := Default()
	if err := Decode([]byte(Example), cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// edit replaces old with new in base, failing the test if old is absent.
func edit(t *testing.T, old, new string) string {
	t.Helper()
	if !strings.Contains(base, old) {
		t.Fatalf("base has no %q", old)
	}
	return strings.Replace(base, old, new, 1)
}

func TestConfErrors(t *testing.T) {
	tests := []struct {
		name, old, new string
		want           string
	}{
		{"unknown top-level", `"selfSigned": true,`, `"selfSigned": true, "publicUrl": "x",`, "publicUrl: unknown setting"},
		{"unknown camera field", `"name": "b",`, `"name": "b", "port": 1,`, "cameras[1].port: unknown setting"},
		{"unknown iotHub field", `"iotHub": {`, `"iotHub": {"key": 1, `, "iotHub.key: unknown setting"},
		{"type", `"localPort": 554, "mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"}
  ]`, `"localPort": "554", "mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"}
  ]`, "cameras[1].localPort: must be an integer, got string"},
		{"bool type", `"selfSigned": true`, `"selfSigned": "yes"`, "selfSigned: must be true or false"},
		{"cameras type", `"cameras": [`, `"cameras": {"x":[`, "invalid JSON"},
		{"cameras not array", `"cameras": [`, `"old": [`, "old: unknown setting"},
		{"duration", `"selfSigned": true,`, `"selfSigned": true, "tokenTTL": 5,`, `tokenTTL: must be a duration string`},
		{"duration text", `"selfSigned": true,`, `"selfSigned": true, "tokenTTL": "5 apples",`, `tokenTTL: must be a duration like`},
		{"syntax", `"selfSigned": true,`, `"selfSigned": true,,`, "line 2"},
		{"port range", `"localPort": 554, "mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"}
  ]`, `"localPort": 70000, "mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"}
  ]`, "cameras[1].localPort: must be 1..65535"},
		{"port zero", `"localPort": 554, "mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"}
  ]`, `"mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"}
  ]`, "cameras[1].localPort: must be 1..65535"},
		{"name missing", `"name": "b", `, ``, "cameras[1].name: must be"},
		{"name bad", `"name": "b"`, `"name": "b c"`, "cameras[1].name: must be"},
		{"name duplicate", `"name": "b"`, `"name": "a"`, `cameras[1].name: duplicate of cameras[0].name "a"`},
		{"device missing", `"deviceId": "d2", `, ``, "cameras[1].deviceId: required"},
		{"device bad", `"deviceId": "d2"`, `"deviceId": "d/2"`, "cameras[1].deviceId: character '/'"},
		{"module bad", `"moduleId": "rtsptunnel"`, `"moduleId": "rtsp tunnel"`, "cameras[0].moduleId: character ' '"},
		{"listen missing", `"localPort": 554, "mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"}
  ]`, `"localPort": 554, "mode": "passthrough", "users": ["alice"]}
  ]`, "cameras[1].listen: required"},
		{"listen bad", `"localPort": 554, "mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"}
  ]`, `"localPort": 554, "mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1"}
  ]`, "cameras[1].listen: must be host:port"},
		{"listen duplicate", `"listen": "127.0.0.1:0"}
  ]`, `"listen": "127.0.0.1:8554"}
  ]`, "cameras[1].listen: same address as cameras[0].listen"},
		{"rtspPath", `"name": "b",`, `"name": "b", "rtspPath": "a b",`, "cameras[1].rtspPath: must not contain"},
		{"no cameras", `"cameras": [
    {"name": "a", "deviceId": "d1", "moduleId": "rtsptunnel", "localPort": 554, "mode": "passthrough", "users": ["*"], "listen": "127.0.0.1:8554"},
    {"name": "b", "deviceId": "d2", "localPort": 554, "mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"}
  ]`, `"cameras": []`, "cameras: at least one camera is required"},
		{"no users", `"users": [{`, `"old": [{`, "old: unknown setting"},
		{"users empty", `"users": [{"name": "alice", "ha1": "db0b043deb53edb1d118a2fc924c8d53", "hash": "$2a$12$Bi.07NpugoWngIQOEbRr.uoq5xRwrZB5/caqkIGWoSKnvh3HzcGX2"}],`, `"users": [],`, "users: required"},
		{"user ha1", `"ha1": "db0b`, `"ha1": "zz0b`, "users[0]: "},
		{"user name", `"name": "alice"`, `"name": "al:ice"`, "users[0].name: must be"},
		{"camera user unknown", `"users": ["alice"]`, `"users": ["bob"]`, `cameras[1].users: "bob" is not in users`},
		{"camera users missing", `"users": ["alice"], `, ``, `cameras[1].users: required`},
		{"shared with listen", `"mode": "passthrough", "users": ["alice"]`, `"users": ["alice"]`, `cameras[1].listen: only for mode "passthrough"`},
		{"mode bad", `"mode": "passthrough", "users": ["alice"]`, `"mode": "proxy", "users": ["alice"]`, `cameras[1].mode: must be "shared" or "passthrough"`},
		{"passthrough username", `"mode": "passthrough", "users": ["alice"]`, `"mode": "passthrough", "username": "u", "users": ["alice"]`, `cameras[1].username: only for mode "shared"`},
		{"password without user", `"mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"`, `"users": ["alice"], "passwordEnv": "X"`, `cameras[1].username: required with passwordEnv`},
		{"password env and file", `"mode": "passthrough", "users": ["alice"], "listen": "127.0.0.1:0"`, `"users": ["alice"], "username": "u", "passwordEnv": "X", "passwordFile": "/x"`, `cameras[1].passwordEnv: passwordEnv and passwordFile are mutually exclusive`},
		{"rtsps with insecure", `"selfSigned": true,`, `"insecureWS": true, "rtspsListen": "127.0.0.1:0",`, `rtspsListen: needs a certificate`},
		{"linger", `"selfSigned": true,`, `"selfSigned": true, "linger": "2h",`, `linger: must be between`},
		{"webrtc udp", `"selfSigned": true,`, `"selfSigned": true, "webrtcUDPListen": "8189",`, `webrtcUDPListen: must be host:port`},
		{"webrtc tcp", `"selfSigned": true,`, `"selfSigned": true, "webrtcTCPListen": ":99999",`, `webrtcTCPListen: port must be`},
		{"public ips without webrtc", `"selfSigned": true,`, `"selfSigned": true, "webrtcPublicIPs": "203.0.113.7",`, `webrtcPublicIPs: needs webrtcUDPListen or webrtcTCPListen`},
		{"public ips bad", `"selfSigned": true,`, `"selfSigned": true, "webrtcUDPListen": ":8189", "webrtcPublicIPs": "203.0.113.7, relay.example.com",`, `webrtcPublicIPs: must be comma-separated IP addresses, got "relay.example.com"`},
		{"web token ttl", `"selfSigned": true,`, `"selfSigned": true, "webTokenTTL": "10s",`, `webTokenTTL: must be between`},
		{"idle", `"selfSigned": true,`, `"selfSigned": true, "idleTimeout": "10ms",`, `idleTimeout: must be between`},
		{"max players", `"selfSigned": true,`, `"selfSigned": true, "maxPlayers": -1,`, `maxPlayers: must be 0`},
		{"realm", `"selfSigned": true,`, `"selfSigned": true, "realm": "a\"b",`, `realm: must be`},
		{"no tls", `"selfSigned": true,`, ``, "tlsCertFile: required"},
		{"two tls modes", `"selfSigned": true,`, `"selfSigned": true, "insecureWS": true,`, "insecureWS: tlsCertFile/tlsKeyFile, selfSigned and insecureWS are mutually exclusive"},
		{"cert without key", `"selfSigned": true,`, `"tlsCertFile": "x.pem",`, "tlsKeyFile: required when tlsCertFile is set"},
		{"cert file without self-signed", `"selfSigned": true,`, `"insecureWS": true, "selfSignedCertFile": "x",`, "selfSignedCertFile: only meaningful with selfSigned"},
		{"public http", `"selfSigned": true,`, `"selfSigned": true, "publicURL": "https://x",`, "publicURL: must be a wss:// URL"},
		{"public ws", `"selfSigned": true,`, `"selfSigned": true, "publicURL": "ws://x",`, "publicURL: ws:// needs insecureWS"},
		{"public query", `"selfSigned": true,`, `"selfSigned": true, "publicURL": "wss://x/?a=b",`, "publicURL: must not have"},
		{"ws listen", `"selfSigned": true,`, `"selfSigned": true, "websocketListen": "8443",`, "websocketListen: must be host:port"},
		{"metrics listen", `"selfSigned": true,`, `"selfSigned": true, "metricsListen": "x:y",`, "metricsListen: port must be"},
		{"method timeout", `"selfSigned": true,`, `"selfSigned": true, "methodResponseTimeout": "1s",`, "methodResponseTimeout: must be between 5s and 300s"},
		{"session wait", `"selfSigned": true,`, `"selfSigned": true, "sessionWaitTimeout": "0s",`, "sessionWaitTimeout: must be between"},
		{"token ttl", `"selfSigned": true,`, `"selfSigned": true, "tokenTTL": "-1s",`, "tokenTTL: must be between"},
		{"max sessions (removed)", `"selfSigned": true,`, `"selfSigned": true, "maxSessionsPerCamera": 1,`, "maxSessionsPerCamera: unknown setting"},
		{"log level", `"selfSigned": true,`, `"selfSigned": true, "logLevel": "loud",`, "logLevel: must be"},
		{"auth", `"iotHub": {`, `"iotHub": {"auth": "x509", `, `iotHub.auth: must be "sas", "entra"`},
		{"conn string key", `SharedAccessKey=c2VjcmV0`, `SharedAccessKey=%%%`, "iotHub.connectionString: SharedAccessKey is not valid base64"},
		{"conn string device", `SharedAccessKey=c2VjcmV0`, `SharedAccessKey=c2VjcmV0;DeviceId=d`, "iotHub.connectionString: this is a device or module connection string"},
		{"conn string host", `HostName=hub.example;`, ``, "iotHub.connectionString: missing HostName"},
		{"service url", `"iotHub": {`, `"iotHub": {"serviceURL": "http://127.0.0.1:1", `, "iotHub.serviceURL: must be an absolute https:// URL"},
		{"hub host for entra", `"iotHub": {"connectionString": "HostName=hub.example;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0"}`, `"iotHub": {"auth": "entra"}`, "cameras[0].iotHubHost: required when no service connection string is set"},
		{"hub host differs", `"name": "b",`, `"name": "b", "iotHubHost": "other.example",`, `cameras[1].iotHubHost: "other.example" differs from the connection string's HostName`},
		{"hub host bad", `"name": "b",`, `"name": "b", "iotHubHost": "https://hub.example",`, `cameras[1].iotHubHost: must be a host name`},
		{"sas without string", `"iotHub": {"connectionString": "HostName=hub.example;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0"}`, `"iotHub": {"auth": "sas"}`, "iotHub.connectionString: required with auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content := edit(t, tt.old, tt.new)
			_, err := Load([]string{"--config", writeFile(t, content)}, noEnv, &bytes.Buffer{})
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "c2VjcmV0") {
				t.Fatalf("error leaks the shared access key: %q", err)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	content := edit(t, `"selfSigned": true,`, `"selfSigned": true, "tokenTTL": "7s", "logLevel": "warn",`)
	content = strings.Replace(content, `"iotHub": {`, `"iotHub": {"serviceURL": "https://file.example", "caFile": "file.pem", `, 1)
	file := writeFile(t, content)
	env := map[string]string{
		"IOTHUB_SERVICE_URL": "https://env.example",
		"IOTHUB_CA_FILE":     "env.pem",
	}
	cfg, err := Load([]string{"--config", file, "--token-ttl", "9s", "--iothub-ca-file", "flag.pem", "--insecure-ws=false"},
		func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(cfg.TokenTTL); got != 9*time.Second {
		t.Errorf("tokenTTL = %v, want the flag's 9s", got)
	}
	if cfg.LogLevel != "warn" {
		t.Errorf("logLevel = %q, want the file's warn", cfg.LogLevel)
	}
	if cfg.IoTHub.ServiceURL != "https://env.example" {
		t.Errorf("serviceURL = %q, want the environment's", cfg.IoTHub.ServiceURL)
	}
	if cfg.IoTHub.CAFile != "flag.pem" {
		t.Errorf("caFile = %q, want the flag's", cfg.IoTHub.CAFile)
	}
}

func TestCameraFlag(t *testing.T) {
	env := map[string]string{"IOTHUB_SERVICE_CONNECTION_STRING": "HostName=hub.example;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0"}
	getenv := func(k string) string { return env[k] }
	env["CAM_X_PASSWORD"] = "s3cret"
	cfg, err := Load([]string{"--self-signed", "--allow-anonymous",
		"--camera", "name=x,deviceId=d,moduleId=m,localPort=5541,rtspPath=s1,username=admin,passwordEnv=CAM_X_PASSWORD,users=*",
		"--camera", "name=y,deviceId=d,localPort=554,mode=passthrough,listen=127.0.0.1:0"}, getenv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Camera{
		{Name: "x", DeviceID: "d", ModuleID: "m", LocalPort: 5541, RTSPPath: "s1", Username: "admin", PasswordEnv: "CAM_X_PASSWORD", Users: []string{"*"}, password: "s3cret"},
		{Name: "y", DeviceID: "d", LocalPort: 554, Mode: ModePassthrough, Listen: "127.0.0.1:0"},
	}
	if !reflect.DeepEqual(cfg.Cameras, want) {
		t.Fatalf("cameras = %+v", cfg.Cameras)
	}
	for _, tt := range []struct{ spec, want string }{
		{"name=x,port=1", "port: unknown setting"},
		{"name=x,localPort=abc", "localPort: must be an integer"},
		{"name", `"name" is not key=value`},
		{"name=x,deviceId=d,localPort=0,listen=127.0.0.1:0", "cameras[0].localPort: must be 1..65535"},
	} {
		_, err := Load([]string{"--self-signed", "--camera", tt.spec}, getenv, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("--camera %q: %v, want %q", tt.spec, err, tt.want)
		}
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--token-ttl", "soon"}, "must be a duration"},
		{[]string{"--max-players", "many"}, "must be an integer"},
		{[]string{"--nope"}, "flag provided but not defined: -nope"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--config", "/nonexistent/relay.json"}, "failed to read config"},
	} {
		_, err := Load(tt.args, noEnv, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%q) = %v, want %q", tt.args, err, tt.want)
		}
	}
}

// TestHelpDocumentsEverySetting checks the settings table against the
// Config struct in both directions, and that --help shows every entry.
func TestHelpDocumentsEverySetting(t *testing.T) {
	var out bytes.Buffer
	_, err := Load([]string{"--help"}, noEnv, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v, want flag.ErrHelp", err)
	}
	help := out.String()

	var leaves []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for name, i := range jsonFields(t) {
			ft := t.Field(i).Type
			switch {
			case ft.Kind() == reflect.Struct:
				walk(prefix+name+".", ft)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				leaves = append(leaves, prefix+name)
				walk(prefix+name+"[].", ft.Elem())
			default:
				leaves = append(leaves, prefix+name)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())

	documented := map[string]bool{}
	for _, s := range settings {
		documented[s.Path] = true
		if !strings.Contains(help, s.Path) {
			t.Errorf("--help does not mention %s", s.Path)
		}
		if s.Flag != "" && !strings.Contains(help, "--"+s.Flag) {
			t.Errorf("--help does not show --%s", s.Flag)
		}
		if s.Env != "" && !strings.Contains(help, s.Env) {
			t.Errorf("--help does not show %s", s.Env)
		}
		if s.Help == "" {
			t.Errorf("%s has no help text", s.Path)
		}
	}
	for _, l := range leaves {
		if !documented[l] {
			t.Errorf("setting %s is not in the settings table", l)
		}
		delete(documented, l)
	}
	for p := range documented {
		t.Errorf("settings table names %s, which is not a Config field", p)
	}
	for _, e := range EnvVars {
		if !strings.Contains(help, e) {
			t.Errorf("--help does not show %s", e)
		}
	}
	if !strings.Contains(help, `"ready":true`) {
		t.Error("--help does not describe the ready line")
	}
}

// TestCameraSecrets: a shared camera's password comes from the environment
// or a file; a missing one is an error that names the setting, not a value.
func TestCameraSecrets(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/door.pw"
	if err := os.WriteFile(file, []byte("from-file-5ec\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := dir + "/empty.pw"
	os.WriteFile(empty, nil, 0o600)
	env := map[string]string{
		"IOTHUB_SERVICE_CONNECTION_STRING": "HostName=hub.example;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0",
		"DOOR_PW":                          "from-env-5ec",
	}
	load := func(spec string) (*Config, error) {
		return Load([]string{"--self-signed", "--allow-anonymous", "--camera", "name=door,deviceId=d,localPort=554,username=admin," + spec},
			func(k string) string { return env[k] }, &bytes.Buffer{})
	}
	tests := []struct {
		spec, password, err string
	}{
		{"passwordEnv=DOOR_PW", "from-env-5ec", ""},
		{"passwordFile=" + file, "from-file-5ec", ""},
		{"passwordEnv=NOT_SET", "", "cameras[0].passwordEnv: environment variable NOT_SET is unset or empty"},
		{"passwordFile=" + dir + "/missing", "", "cameras[0].passwordFile: open " + dir + "/missing"},
		{"passwordFile=" + empty, "", "cameras[0].passwordFile: " + empty + " is empty"},
	}
	for _, tt := range tests {
		cfg, err := load(tt.spec)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error %v, want %q", tt.spec, err, tt.err)
			}
		case err != nil:
			t.Errorf("%s: %v", tt.spec, err)
		case cfg.Cameras[0].Password() != tt.password:
			t.Errorf("%s: password %q, want %q", tt.spec, cfg.Cameras[0].Password(), tt.password)
		}
	}
}
