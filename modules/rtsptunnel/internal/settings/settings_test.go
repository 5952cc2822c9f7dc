package settings

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env returns a getenv func over a map.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestDefaultsAreValid(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := FromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	s.start = nil
	if !reflect.DeepEqual(s, Defaults()) {
		t.Fatalf("FromEnv with empty environment = %+v, want defaults", s)
	}
}

func TestFieldNames(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range Fields() {
		if f.Env != "RTSPTUNNEL_"+strings.ToUpper(f.Name) {
			t.Errorf("%s: env %s not derived from the name", f.Name, f.Env)
		}
		if seen[strings.ToLower(f.Name)] {
			t.Errorf("%s: duplicate (case-insensitive) name", f.Name)
		}
		seen[strings.ToLower(f.Name)] = true
		if f.Description == "" || f.Type == "" || f.Accepts == "" || !json.Valid(f.DefaultJSON) {
			t.Errorf("%s: incomplete documentation: %+v", f.Name, f)
		}
	}
	// The names other packages and the templates rely on.
	for _, name := range []string{"targets", "allowedPorts", "allowedRemoteHosts", "allowInsecureWebSocket", "remoteCAFile",
		"maxSessions", "dialTimeout", "handshakeTimeout", "openTimeout", "idleTimeout", "maxSessionDuration", "pingInterval",
		"pingTimeout", "sessionRetention", "logLevel", "logFormat", "metricsAddr", "hubTransport", "hubPort", "tokenLifetime"} {
		if !seen[strings.ToLower(name)] {
			t.Errorf("setting %s is missing", name)
		}
	}
	envOnly := map[string]bool{"logFormat": true, "hubTransport": true, "hubPort": true, "tokenLifetime": true}
	for _, f := range Fields() {
		if f.Writable == envOnly[f.Name] {
			t.Errorf("%s: writable = %v, want %v", f.Name, f.Writable, !envOnly[f.Name])
		}
	}
	if u := Usage(); !strings.Contains(u, "RTSPTUNNEL_MAXSESSIONS") || !strings.Contains(u, "(env-only)") {
		t.Errorf("Usage() lacks settings:\n%s", u)
	}
}

// valueCase is one value of one setting, in both syntaxes. An empty envText or
// jsonText skips that syntax; want nil means the value must be rejected.
type valueCase struct {
	name     string
	envText  string
	jsonText string
	want     any
}

func valueCases(t *testing.T) []valueCase {
	ca := testutil.NewCA(t, "test CA").WriteFile(t, "ca.pem")
	notPEM := testutil.WriteFile(t, "not.pem", []byte("hello"))
	return []valueCase{
		// targets
		{"targets", `{"554":"192.168.10.21:554"}`, `{"554":"192.168.10.21:554"}`, Targets{554: "192.168.10.21:554"}},
		{"targets", `554=192.168.10.21:554, 5541=cam2.lan:8554`, `{"554":"192.168.10.21:554","5541":"cam2.lan:8554"}`, Targets{554: "192.168.10.21:554", 5541: "cam2.lan:8554"}},
		{"targets", `{}`, `{}`, Targets{}},
		{"targets", `554=[::1]:554`, `{"554":"[::1]:554"}`, Targets{554: "[::1]:554"}},
		{"targets", `554=cam`, `{"554":"cam"}`, nil},
		{"targets", `0=cam:554`, `{"0":"cam:554"}`, nil},
		{"targets", `65536=cam:554`, `{"65536":"cam:554"}`, nil},
		{"targets", `x=cam:554`, `{"x":"cam:554"}`, nil},
		{"targets", `0554=cam:554`, `{"0554":"cam:554"}`, nil},
		{"targets", `554=cam:0`, `{"554":"cam:0"}`, nil},
		{"targets", `554=cam:99999`, `{"554":"cam:99999"}`, nil},
		{"targets", `554=bad host:554`, `{"554":"bad host:554"}`, nil},
		{"targets", `554`, `[554]`, nil},
		{"targets", `{"554":5}`, `{"554":5}`, nil},
		// allowedPorts
		{"allowedPorts", `554,8554`, `[554,8554]`, []int{554, 8554}},
		{"allowedPorts", `[554]`, `[554]`, []int{554}},
		{"allowedPorts", `[]`, `[]`, []int{}},
		{"allowedPorts", `0`, `[0]`, nil},
		{"allowedPorts", `65536`, `[65536]`, nil},
		{"allowedPorts", `554.5`, `[554.5]`, nil},
		{"allowedPorts", `["554"]`, `["554"]`, nil},
		{"allowedPorts", `abc`, `554`, nil},
		// allowedRemoteHosts
		{"allowedRemoteHosts", `relay.example.com,*.rtsp-tunnel.example.net`, `["relay.example.com","*.rtsp-tunnel.example.net"]`, []string{"relay.example.com", "*.rtsp-tunnel.example.net"}},
		{"allowedRemoteHosts", `[]`, `[]`, []string{}},
		{"allowedRemoteHosts", `127.0.0.1`, `["127.0.0.1"]`, []string{"127.0.0.1"}},
		{"allowedRemoteHosts", `a b.com`, `["a b.com"]`, nil},
		{"allowedRemoteHosts", `*`, `["*"]`, nil},
		{"allowedRemoteHosts", `https://x.com`, `["https://x.com"]`, nil},
		{"allowedRemoteHosts", ``, `"relay.example.com"`, nil},
		// allowInsecureWebSocket
		{"allowInsecureWebSocket", `true`, `true`, true},
		{"allowInsecureWebSocket", `false`, `false`, false},
		{"allowInsecureWebSocket", `yes`, `"true"`, nil},
		{"allowInsecureWebSocket", `1`, `1`, nil},
		// remoteCAFile
		{"remoteCAFile", ca, mustJSON(ca), ca},
		{"remoteCAFile", ``, `""`, ""},
		{"remoteCAFile", notPEM, mustJSON(notPEM), nil},
		{"remoteCAFile", "/nonexistent/ca.pem", `"/nonexistent/ca.pem"`, nil},
		{"remoteCAFile", ``, `5`, nil},
		// maxSessions
		{"maxSessions", `1`, `1`, 1},
		{"maxSessions", `1000`, `1000`, 1000},
		{"maxSessions", `0`, `0`, nil},
		{"maxSessions", `1001`, `1001`, nil},
		{"maxSessions", `-1`, `-1`, nil},
		{"maxSessions", `5.5`, `5.5`, nil},
		{"maxSessions", `1e2`, `1e2`, nil},
		{"maxSessions", `ten`, `"10"`, nil},
		{"maxSessions", `99999999999999999999`, `99999999999999999999`, nil},
		// durations, all of the same syntax
		{"dialTimeout", `3s`, `"3s"`, 3 * time.Second},
		{"dialTimeout", `3`, `3`, 3 * time.Second},
		{"dialTimeout", `0.25`, `0.25`, 250 * time.Millisecond},
		{"dialTimeout", `1m30s`, `"1m30s"`, 90 * time.Second},
		{"dialTimeout", `0`, `0`, nil},
		{"dialTimeout", `-1s`, `"-1s"`, nil},
		{"dialTimeout", `3 seconds`, `"3 seconds"`, nil},
		{"dialTimeout", ``, `"3"`, nil},
		{"dialTimeout", `true`, `true`, nil},
		{"dialTimeout", `1e300`, `1e300`, nil},
		{"handshakeTimeout", `10s`, `"10s"`, 10 * time.Second},
		{"handshakeTimeout", `0s`, `"0s"`, nil},
		{"openTimeout", `20s`, `20`, 20 * time.Second},
		{"openTimeout", `5m`, `300`, 5 * time.Minute},
		{"openTimeout", `301s`, `301`, nil},
		{"openTimeout", `0`, `0`, nil},
		{"idleTimeout", `0`, `0`, time.Duration(0)},
		{"idleTimeout", `2m`, `"2m"`, 2 * time.Minute},
		{"idleTimeout", `-5`, `-5`, nil},
		{"maxSessionDuration", `0`, `"0s"`, time.Duration(0)},
		{"maxSessionDuration", `24h`, `86400`, 24 * time.Hour},
		{"maxSessionDuration", `forever`, `"forever"`, nil},
		{"pingInterval", `0`, `0`, time.Duration(0)},
		{"pingInterval", `5s`, `5`, 5 * time.Second},
		{"pingInterval", `-1ms`, `"-1ms"`, nil},
		{"pingTimeout", `2s`, `"2s"`, 2 * time.Second},
		{"pingTimeout", `0`, `0`, nil},
		{"sessionRetention", `0`, `0`, time.Duration(0)},
		{"sessionRetention", `24h`, `"24h"`, 24 * time.Hour},
		{"sessionRetention", `25h`, `"25h"`, nil},
		// logLevel
		{"logLevel", `debug`, `"debug"`, "debug"},
		{"logLevel", `error`, `"error"`, "error"},
		{"logLevel", `DEBUG`, `"DEBUG"`, nil},
		{"logLevel", `verbose`, `"verbose"`, nil},
		{"logLevel", ``, `1`, nil},
		// logFormat (env-only)
		{"logFormat", `text`, ``, "text"},
		{"logFormat", `xml`, ``, nil},
		// metricsAddr
		{"metricsAddr", `:9600`, `":9600"`, ":9600"},
		{"metricsAddr", `127.0.0.1:9700`, `"127.0.0.1:9700"`, "127.0.0.1:9700"},
		{"metricsAddr", `[::1]:0`, `"[::1]:0"`, "[::1]:0"},
		{"metricsAddr", ``, `""`, ""},
		{"metricsAddr", `9600`, `"9600"`, nil},
		{"metricsAddr", `:http`, `":http"`, nil},
		{"metricsAddr", `:70000`, `":70000"`, nil},
		// hub settings (env-only)
		{"hubTransport", `mqttws`, ``, "mqttws"},
		{"hubTransport", `amqp`, ``, nil},
		{"hubPort", `8883`, ``, 8883},
		{"hubPort", `0`, ``, 0},
		{"hubPort", `65536`, ``, nil},
		{"hubPort", `port`, ``, nil},
		{"tokenLifetime", `30m`, ``, 30 * time.Minute},
		{"tokenLifetime", `3600`, ``, time.Hour},
		{"tokenLifetime", `30s`, ``, 30 * time.Second},
		{"tokenLifetime", `1s`, ``, nil},
		{"tokenLifetime", `48h`, ``, nil},
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func fieldValue(s Settings, name string) any {
	return reflect.ValueOf(s).Field(byName[name].index).Interface()
}

// TestValues checks every setting's accepted and rejected values, from the
// environment and from the twin, and that both syntaxes agree.
func TestValues(t *testing.T) {
	good, bad := map[string]bool{}, map[string]bool{}
	for _, tc := range valueCases(t) {
		f := byName[tc.name]
		if f == nil {
			t.Fatalf("no setting %q", tc.name)
		}
		if tc.want == nil {
			bad[tc.name] = true
		} else {
			good[tc.name] = true
		}
		if tc.envText != "" {
			t.Run("env/"+tc.name+"="+tc.envText, func(t *testing.T) {
				s, err := FromEnv(env(map[string]string{f.env: tc.envText}))
				if tc.want == nil {
					var se *Error
					if !errors.As(err, &se) || se.Setting != tc.name || !strings.Contains(err.Error(), f.env) || !strings.Contains(err.Error(), `"`+tc.name+`"`) {
						t.Fatalf("error = %v, want an *Error naming %q and %s", err, tc.name, f.env)
					}
					if got, def := fieldValue(s, tc.name), fieldValue(Defaults(), tc.name); !reflect.DeepEqual(got, def) {
						t.Fatalf("rejected value changed the setting to %v", got)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if got := fieldValue(s, tc.name); !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("got %#v, want %#v", got, tc.want)
				}
			})
		}
		if tc.jsonText != "" && f.writable {
			t.Run("twin/"+tc.name+"="+tc.jsonText, func(t *testing.T) {
				desired := `{"$version":7,"` + tc.name + `":` + tc.jsonText + `}`
				s, acks := Defaults().Apply(json.RawMessage(desired))
				ack, ok := acks[tc.name]
				if !ok || len(acks) != 1 || ack.AV != 7 {
					t.Fatalf("acks = %+v", acks)
				}
				if tc.want == nil {
					if ack.AC != 400 || !strings.Contains(ack.AD, `"`+tc.name+`"`) {
						t.Fatalf("ack = %+v, want 400 naming the setting", ack)
					}
					if got, def := fieldValue(s, tc.name), fieldValue(Defaults(), tc.name); !reflect.DeepEqual(got, def) {
						t.Fatalf("rejected value changed the setting to %v", got)
					}
					return
				}
				if ack.AC != 200 {
					t.Fatalf("ack = %+v, want 200", ack)
				}
				if got := fieldValue(s, tc.name); !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("got %#v, want %#v", got, tc.want)
				}
				if err := s.Validate(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	for _, f := range fields {
		if !good[f.name] || !bad[f.name] {
			t.Errorf("setting %s needs at least one good and one bad case (good %v, bad %v)", f.name, good[f.name], bad[f.name])
		}
	}
}

// TestEnvJSONParity feeds the canonical JSON of every default and of every good
// case back through both decoders: the environment and the twin must agree.
func TestEnvJSONParity(t *testing.T) {
	def := reflect.ValueOf(Defaults())
	for _, f := range fields {
		v := def.Field(f.index)
		for _, text := range []string{f.envText(v), string(f.encodeJSON(v))} {
			if text == "" {
				continue
			}
			if f.kind == kindString && text != f.envText(v) {
				continue // a JSON string is not the env form of a string
			}
			got, err := f.decodeJSON(f.envToJSON(text))
			if err != nil || !reflect.DeepEqual(got.Interface(), v.Interface()) {
				t.Errorf("%s: env %q → %v, %v; want %v", f.name, text, got, err, v)
			}
		}
		got, err := f.decodeJSON(f.encodeJSON(v))
		if err != nil || !reflect.DeepEqual(got.Interface(), v.Interface()) {
			t.Errorf("%s: JSON round trip → %v, %v", f.name, got, err)
		}
	}
	for _, tc := range valueCases(t) {
		f := byName[tc.name]
		if tc.want == nil || tc.envText == "" || tc.jsonText == "" {
			continue
		}
		a, errA := f.decodeJSON(f.envToJSON(tc.envText))
		b, errB := f.decodeJSON(json.RawMessage(tc.jsonText))
		if errA != nil || errB != nil || !reflect.DeepEqual(a.Interface(), b.Interface()) {
			t.Errorf("%s: env %q → %v (%v), JSON %s → %v (%v)", tc.name, tc.envText, a, errA, tc.jsonText, b, errB)
		}
	}
}

func TestFromEnvReportsEveryError(t *testing.T) {
	s, err := FromEnv(env(map[string]string{
		"RTSPTUNNEL_MAXSESSIONS": "0",
		"RTSPTUNNEL_DIALTIMEOUT": "soon",
		"RTSPTUNNEL_IDLETIMEOUT": "2m",
		"RTSPTUNNEL_LOGLEVEL":    "", // empty counts as unset
	}))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`"maxSessions"`, "RTSPTUNNEL_MAXSESSIONS", "from 1 to 1000", `"dialTimeout"`, `"soon"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if s.IdleTimeout != 2*time.Minute || s.LogLevel != "info" {
		t.Errorf("valid settings not applied: %+v", s)
	}
}

// TestFromEnvEmpty: a variable set but empty counts as unset, except where ""
// is a value of its own: RTSPTUNNEL_METRICSADDR= disables the metrics server,
// as its description says.
func TestFromEnvEmpty(t *testing.T) {
	vars := map[string]string{}
	for _, f := range fields {
		vars[f.env] = ""
	}
	s, err := FromEnv(env(vars))
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.MetricsAddr = ""
	s.start, want.start = nil, nil
	if !reflect.DeepEqual(s, want) {
		t.Errorf("every variable empty: got %+v, want the defaults with metricsAddr \"\" (%+v)", s, want)
	}
	if s, err := FromEnv(env(map[string]string{"RTSPTUNNEL_METRICSADDR": ""})); err != nil || s.MetricsAddr != "" {
		t.Errorf("RTSPTUNNEL_METRICSADDR=: metricsAddr %q, err %v; want \"\" (disabled)", s.MetricsAddr, err)
	}
}

func TestApply(t *testing.T) {
	start, err := FromEnv(env(map[string]string{"RTSPTUNNEL_MAXSESSIONS": "10"}))
	if err != nil {
		t.Fatal(err)
	}
	cur, acks := start.Apply(json.RawMessage(`{"maxSessions":5,"idleTimeout":"2m","$version":3,"$metadata":{"x":1}}`))
	if cur.MaxSessions != 5 || cur.IdleTimeout != 2*time.Minute || len(acks) != 2 {
		t.Fatalf("settings %+v acks %+v", cur, acks)
	}

	next, acks := cur.Apply(json.RawMessage(`{
		"$version": 4,
		"maxSessions": null,
		"idleTimeout": "banana",
		"pingInterval": 5,
		"logFormat": "text",
		"sessions": {"a": 1},
		"targets": {"554": "10.0.0.1:554"}
	}`))
	want := map[string]int{"maxSessions": 200, "idleTimeout": 400, "pingInterval": 200, "logFormat": 400, "sessions": 400, "targets": 200}
	if len(acks) != len(want) {
		t.Fatalf("acks = %+v", acks)
	}
	for k, ac := range want {
		if acks[k].AC != ac || acks[k].AV != 4 {
			t.Errorf("ack %s = %+v, want ac %d av 4", k, acks[k], ac)
		}
	}
	if next.MaxSessions != 10 {
		t.Errorf("null reset maxSessions to %d, want the start-up value 10", next.MaxSessions)
	}
	if next.IdleTimeout != 2*time.Minute {
		t.Errorf("invalid value changed idleTimeout to %v", next.IdleTimeout)
	}
	if next.PingInterval != 5*time.Second || next.Targets[554] != "10.0.0.1:554" || next.LogFormat != Defaults().LogFormat {
		t.Errorf("settings = %+v", next)
	}
	if cur.PingInterval != 15*time.Second || len(cur.Targets) != 0 {
		t.Errorf("Apply modified its receiver: %+v", cur)
	}
	for _, c := range []struct{ key, want string }{
		{"maxSessions", `{"value":10,"ac":200,"av":4,"ad":"reset to the start-up value"}`},
		{"pingInterval", `{"value":5,"ac":200,"av":4,"ad":"applied"}`},
		{"logFormat", `{"value":"text","ac":400,"av":4,"ad":"setting \"logFormat\" cannot be changed through the twin; set the environment variable RTSPTUNNEL_LOGFORMAT"}`},
	} {
		if got := mustJSON(acks[c.key]); got != c.want {
			t.Errorf("ack %s = %s, want %s", c.key, got, c.want)
		}
	}
	if ad := acks["sessions"].AD; !strings.Contains(ad, `unknown setting "sessions"`) || !strings.Contains(ad, "maxSessions") {
		t.Errorf("unknown-key ack %q should name the key and list the accepted settings", ad)
	}
	if ad := acks["idleTimeout"].AD; !strings.Contains(ad, `"idleTimeout"`) || !strings.Contains(ad, `"30s"`) {
		t.Errorf("invalid-value ack %q should name the setting and say what is accepted", ad)
	}

	// A settings value built without FromEnv resets to the defaults.
	reset, _ := Settings{MaxSessions: 3}.Apply(json.RawMessage(`{"maxSessions":null}`))
	if reset.MaxSessions != 100 {
		t.Errorf("reset without start-up values = %d, want default 100", reset.MaxSessions)
	}
	// Huge rejected values are not echoed.
	_, acks = Defaults().Apply(json.RawMessage(`{"nope":"` + strings.Repeat("x", 1000) + `"}`))
	if acks["nope"].Value != nil || acks["nope"].AC != 400 {
		t.Errorf("huge value echoed: %+v", acks["nope"])
	}
	// Not an object: nothing changes.
	for _, d := range []string{``, `null`, `[1]`, `"x"`, `{`} {
		s, acks := Defaults().Apply(json.RawMessage(d))
		if acks != nil || !reflect.DeepEqual(s, Defaults()) {
			t.Errorf("Apply(%q) = %+v, %+v", d, s, acks)
		}
	}
}

func TestTarget(t *testing.T) {
	s := Defaults()
	if addr, ok := s.Target(554); !ok || addr != "127.0.0.1:554" {
		t.Errorf("Target(554) = %q, %v", addr, ok)
	}
	if _, ok := s.Target(8554); ok {
		t.Error("port outside allowedPorts resolved")
	}
	s.Targets = Targets{5541: "cam2:554"}
	if addr, ok := s.Target(5541); !ok || addr != "cam2:554" {
		t.Errorf("Target(5541) = %q, %v", addr, ok)
	}
	if _, ok := s.Target(554); ok {
		t.Error("with targets set, an unmapped allowed port resolved")
	}
}

func TestMatchHost(t *testing.T) {
	patterns := []string{"relay.example.com", "*.tunnel.example.net"}
	for host, want := range map[string]bool{
		"relay.example.com":        true,
		"RELAY.example.com.":       true,
		"a.tunnel.example.net":     true,
		"a.b.tunnel.example.net":   true,
		"tunnel.example.net":       false,
		"eviltunnel.example.net":   false,
		"relay.example.com.evil":   false,
		"x.relay.example.com":      false,
		"":                         false,
		"tunnel.example.net.x.com": false,
	} {
		if got := MatchHost(patterns, host); got != want {
			t.Errorf("MatchHost(%q) = %v, want %v", host, got, want)
		}
	}
	if !MatchHost(nil, "anything") {
		t.Error("an empty list must allow any host")
	}
}

func TestRemoteRootCAs(t *testing.T) {
	pool, err := Defaults().RemoteRootCAs()
	if pool != nil || err != nil {
		t.Fatalf("no file: %v, %v; want nil (system roots)", pool, err)
	}
	s := Defaults()
	s.RemoteCAFile = testutil.NewCA(t, "test CA").WriteFile(t, "ca.pem")
	if pool, err = s.RemoteRootCAs(); pool == nil || err != nil {
		t.Fatalf("with file: %v, %v", pool, err)
	}
}

func TestUnknownEnv(t *testing.T) {
	got := UnknownEnv([]string{"RTSPTUNNEL_MAXSESSIONS=1", "RTSPTUNNEL_MAXSESSION=1", "PATH=/bin", "RTSPTUNNEL_X"})
	if !reflect.DeepEqual(got, []string{"RTSPTUNNEL_MAXSESSION", "RTSPTUNNEL_X"}) {
		t.Errorf("UnknownEnv = %v", got)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", time.Hour: "1h", time.Minute: "1m", 90 * time.Second: "1m30s", time.Hour + time.Second: "1h0m1s", 250 * time.Millisecond: "250ms"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// FuzzApply checks that no desired document panics Apply, that the result always
// validates, that every non-$ key gets exactly one ack and that rejected keys keep
// their previous value.
func FuzzApply(f *testing.F) {
	for _, seed := range []string{
		`{"maxSessions":5}`, `{"$version":2,"targets":{"554":"a:1"}}`, `{"idleTimeout":"1m","pingInterval":0.5}`,
		`{"allowedPorts":[1,2,3],"allowedRemoteHosts":["*.x.com"]}`, `{"logLevel":null}`, `{"hubPort":1}`, `[]`, `{"a":{"b":[]}}`,
		`{"dialTimeout":1e309}`, `{"targets":{"-1":"a:1"}}`, `{"metricsAddr":":0"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, desired []byte) {
		before := Defaults()
		next, acks := before.Apply(desired)
		if err := next.Validate(); err != nil {
			t.Fatalf("Apply(%q) produced invalid settings: %v", desired, err)
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(desired, &obj) != nil || obj == nil {
			if acks != nil {
				t.Fatalf("acks for a non-object: %v", acks)
			}
			return
		}
		for k := range obj {
			ack, ok := acks[k]
			if strings.HasPrefix(k, "$") {
				if ok {
					t.Fatalf("ack for %q", k)
				}
				continue
			}
			if !ok || (ack.AC != 200 && ack.AC != 400) {
				t.Fatalf("key %q: ack %+v", k, ack)
			}
			if f := byName[k]; ack.AC == 400 && f != nil && !reflect.DeepEqual(fieldValue(next, k), fieldValue(before, k)) {
				t.Fatalf("rejected %q changed the setting", k)
			}
			if _, err := json.Marshal(ack); err != nil {
				t.Fatalf("ack does not marshal: %v", err)
			}
		}
	})
}
