package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/app"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/config"
)

// relayFlags returns the flags "relay --help" lists.
func relayFlags(t *testing.T) []string {
	t.Helper()
	var help bytes.Buffer
	if _, err := config.Load([]string{"--help"}, func(string) string { return "" }, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("relay --help: %v", err)
	}
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)`).FindAllStringSubmatch(help.String(), -1) {
		flags = append(flags, m[1])
	}
	if !slices.Contains(flags, "config") || len(flags) < 10 {
		t.Fatalf("found only %v in relay --help", flags)
	}
	return flags
}

// usedFlag matches a --flag (with or without =value) in a command line.
var usedFlag = regexp.MustCompile(`(?:^|[\s"'\[,])--([a-z0-9-]+)`)

// checkFlags checks that every --flag in text is one of the relay's.
func checkFlags(t *testing.T, where, text string, known []string) {
	t.Helper()
	for _, m := range usedFlag.FindAllStringSubmatch(text, -1) {
		if !slices.Contains(known, m[1]) {
			t.Errorf("%s: --%s is not a relay flag (relay --help lists %v)", where, m[1], known)
		}
	}
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line      int
	cmd, args string
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		cont := strings.HasSuffix(line, `\`)
		cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
		if cont {
			continue
		}
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{start, strings.ToUpper(cmd), strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	return out
}

// buildkitPlatformArgs get no global default: it would replace BuildKit's
// own value (moby/buildkit dockerfile2llb buildMetaArgs; docker/buildx#510).
var buildkitPlatformArgs = []string{"BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
	"TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT"}

var fromVariable = regexp.MustCompile(`\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])([^}]*))?\})`)

func TestDockerfile(t *testing.T) {
	const path = "Dockerfile"
	ins := parseDockerfile(t, path)
	globals := map[string]string{}
	var froms []instruction
	labels := map[string]string{}
	var users, healthchecks, exposes, entrypoints, builds []instruction
	for _, in := range ins {
		switch in.cmd {
		case "ARG":
			if len(froms) > 0 {
				continue
			}
			name, def, _ := strings.Cut(in.args, "=")
			globals[name] = strings.Trim(def, `"`)
			if def != "" && slices.Contains(buildkitPlatformArgs, name) {
				t.Errorf("%s:%d: ARG %s: a global default replaces BuildKit's value; write ${%s:-fallback} where it is used", path, in.line, in.args, name)
			}
		case "FROM":
			froms = append(froms, in)
			// The classic builder sets no platform ARGs: every variable needs
			// a non-empty fallback.
			for _, m := range fromVariable.FindAllStringSubmatch(in.args, -1) {
				name, op, word := m[1]+m[2], m[3], m[4]
				if !(op == ":-" && word != "") && (op != "" || globals[name] == "") {
					t.Errorf("%s:%d: FROM %s: %s has no non-empty fallback for the classic builder", path, in.line, in.args, m[0])
				}
			}
		case "LABEL":
			for _, m := range regexp.MustCompile(`([^\s=]+)=("(?:[^"\\]|\\.)*"|\S+)`).FindAllStringSubmatch(in.args, -1) {
				labels[m[1]] = strings.Trim(m[2], `"`)
			}
		case "USER":
			users = append(users, in)
		case "HEALTHCHECK":
			healthchecks = append(healthchecks, in)
		case "EXPOSE":
			exposes = append(exposes, in)
		case "ENTRYPOINT":
			entrypoints = append(entrypoints, in)
		case "RUN":
			if strings.Contains(in.args, "go build") {
				builds = append(builds, in)
			}
		case "COPY":
			if !strings.HasPrefix(in.args, "--from=") {
				f := strings.Fields(in.args)
				for _, src := range f[:len(f)-1] {
					if _, err := os.Stat(filepath.Join("..", src)); err != nil {
						t.Errorf("%s:%d: COPY %s: not in the build context (the relay folder): %v", path, in.line, src, err)
					}
				}
			}
		}
	}
	if len(froms) != 2 {
		t.Fatalf("%d FROM, want 2 (builder, runtime)", len(froms))
	}
	if !strings.Contains(froms[0].args, "golang:${GO_VERSION}") || globals["GO_VERSION"] != "1.26" {
		t.Errorf("builder FROM %s with GO_VERSION=%q, want golang:${GO_VERSION} and ARG GO_VERSION=1.26", froms[0].args, globals["GO_VERSION"])
	}
	if !strings.HasPrefix(froms[0].args, "--platform=${BUILDPLATFORM:-") {
		t.Errorf("builder FROM %s: want --platform=${BUILDPLATFORM:-...} (compile natively, cross-compile)", froms[0].args)
	}
	if !strings.HasSuffix(froms[1].args, "gcr.io/distroless/static-debian12:nonroot") {
		t.Errorf("runtime FROM %s, want gcr.io/distroless/static-debian12:nonroot", froms[1].args)
	}
	if len(builds) != 1 {
		t.Fatalf("%d RUN with go build, want 1", len(builds))
	}
	for _, want := range []string{"-trimpath", "GOARCH=${TARGETARCH:-", "GOOS=${TARGETOS:-"} {
		if !strings.Contains(builds[0].args, want) {
			t.Errorf("go build lacks %s: %s", want, builds[0].args)
		}
	}
	env := strings.Join(func() (l []string) {
		for _, in := range ins {
			if in.cmd == "ENV" {
				l = append(l, in.args)
			}
		}
		return
	}(), " ")
	for _, want := range []string{"CGO_ENABLED=0", "GOWORK=off"} {
		if !strings.Contains(env, want) {
			t.Errorf("ENV lacks %s (static build of the standalone module)", want)
		}
	}
	if len(users) == 0 || users[len(users)-1].args != "65532:65532" {
		t.Errorf("USER %v, want 65532:65532 (distroless nonroot)", users)
	}
	var ports []string
	for _, e := range exposes {
		ports = append(ports, strings.Fields(e.args)...)
	}
	for _, p := range []string{"8443", "8554", "8322"} {
		if !slices.Contains(ports, p) {
			t.Errorf("EXPOSE %v lacks %s", ports, p)
		}
	}
	if len(healthchecks) != 1 || !strings.HasSuffix(healthchecks[0].args, `CMD ["/relay", "healthcheck"]`) ||
		!strings.Contains(healthchecks[0].args, "--timeout=5s") {
		t.Errorf(`HEALTHCHECK %v, want one with --timeout=5s and CMD ["/relay", "healthcheck"] (exec form: no shell)`, healthchecks)
	}
	if len(entrypoints) != 1 || entrypoints[0].args != `["/relay"]` {
		t.Errorf(`ENTRYPOINT %v, want ["/relay"]`, entrypoints)
	}
	want := map[string]string{
		"org.opencontainers.image.version":  "${VERSION}",
		"org.opencontainers.image.source":   "https://github.com/rtsptunnel/rtsptunnel",
		"org.opencontainers.image.licenses": "MIT",
	}
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("LABEL %s=%q, want %q", k, labels[k], v)
		}
	}
	for _, k := range []string{"org.opencontainers.image.title", "org.opencontainers.image.description"} {
		if labels[k] == "" {
			t.Errorf("no LABEL %s", k)
		}
	}
}

func TestSystemdUnit(t *testing.T) {
	raw, err := os.ReadFile("relay.service")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]map[string][]string{}
	var cur map[string][]string
	for n, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			cur = map[string][]string{}
			sections[strings.Trim(line, "[]")] = cur
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || cur == nil {
				t.Fatalf("relay.service:%d: %q is not key=value in a section", n+1, line)
			}
			cur[k] = append(cur[k], v)
		}
	}
	svc := sections["Service"]
	if svc == nil || sections["Unit"] == nil || sections["Install"] == nil {
		t.Fatalf("want [Unit], [Service] and [Install], got %v", sections)
	}
	for k, v := range map[string]string{
		"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
		"CapabilityBoundingSet": "", "RestartPreventExitStatus": "2",
	} {
		if got, ok := svc[k]; !ok || got[len(got)-1] != v {
			t.Errorf("[Service] %s=%v, want %q", k, got, v)
		}
	}
	if _, ok := svc["AmbientCapabilities"]; ok {
		t.Errorf("AmbientCapabilities set: the default ports need none")
	}
	if len(svc["EnvironmentFile"]) != 1 {
		t.Errorf("want one EnvironmentFile (IOTHUB_SERVICE_CONNECTION_STRING, camera passwords)")
	}
	if len(svc["ExecStart"]) != 1 || !strings.Contains(svc["ExecStart"][0], "--config ") {
		t.Fatalf("ExecStart %v: want one, with --config", svc["ExecStart"])
	}
	checkFlags(t, "relay.service ExecStart", svc["ExecStart"][0], relayFlags(t))
	// The secrets in the environment are the ones the relay reads.
	for _, v := range config.EnvVars {
		if v == "IOTHUB_SERVICE_CONNECTION_STRING" && !strings.Contains(string(raw), v+"=") {
			t.Errorf("relay.service does not show %s in its EnvironmentFile example", v)
		}
	}
}

// yamlDoc is one document of kubernetes.yaml.
type yamlDoc struct {
	line int
	text string
}

// TestKubernetes checks kubernetes.yaml without a YAML library (the relay
// module has none): each document has apiVersion, kind and metadata.name; the
// container's args are relay flags; the probes run the healthcheck; the
// security context is strict; the Service maps 443 to the wss port; and the
// relay.json in the Secret decodes strictly as a relay config.
func TestKubernetes(t *testing.T) {
	raw, err := os.ReadFile("kubernetes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("\t")) {
		t.Fatal("kubernetes.yaml has tabs, which YAML forbids in indentation")
	}
	var docs []yamlDoc
	start, cur := 1, []string{}
	for n, line := range strings.Split(string(raw), "\n") {
		if line == "---" {
			docs = append(docs, yamlDoc{start, strings.Join(cur, "\n")})
			start, cur = n+2, nil
			continue
		}
		cur = append(cur, line)
	}
	docs = append(docs, yamlDoc{start, strings.Join(cur, "\n")})

	kinds := map[string]string{} // kind/name → text
	for _, d := range docs {
		api := regexp.MustCompile(`(?m)^apiVersion: (\S+)$`).FindStringSubmatch(d.text)
		kind := regexp.MustCompile(`(?m)^kind: (\S+)$`).FindStringSubmatch(d.text)
		name := regexp.MustCompile(`(?m)^metadata:\n(?:  .*\n)*?  name: (\S+)$`).FindStringSubmatch(d.text)
		if api == nil || kind == nil || name == nil {
			t.Errorf("kubernetes.yaml document at line %d lacks apiVersion, kind or metadata.name", d.line)
			continue
		}
		kinds[kind[1]+"/"+name[1]] = d.text
	}
	for _, want := range []string{"Secret/relay-env", "Secret/relay-config", "Deployment/rtsptunnel-relay", "Service/rtsptunnel-relay"} {
		if _, ok := kinds[want]; !ok {
			t.Errorf("kubernetes.yaml has no %s (has %v)", want, slices.Collect(func(yield func(string) bool) {
				for k := range kinds {
					if !yield(k) {
						return
					}
				}
			}))
		}
	}

	dep := kinds["Deployment/rtsptunnel-relay"]
	argsBlock := regexp.MustCompile(`(?m)^ +args:\n((?: +- .*\n)+)`).FindStringSubmatch(dep + "\n")
	if argsBlock == nil {
		t.Fatal("Deployment: no container args")
	}
	checkFlags(t, "kubernetes.yaml args", argsBlock[1], relayFlags(t))
	if !strings.Contains(argsBlock[1], "--config=") {
		t.Errorf("Deployment args lack --config")
	}
	for _, probe := range []string{"startupProbe", "livenessProbe", "readinessProbe"} {
		if !regexp.MustCompile(probe + `:\n +exec:\n +command: \["/relay", "healthcheck"\]`).MatchString(dep) {
			t.Errorf("Deployment: %s does not exec /relay healthcheck", probe)
		}
	}
	for _, want := range []string{"runAsNonRoot: true", "readOnlyRootFilesystem: true", "allowPrivilegeEscalation: false",
		`drop: ["ALL"]`, "secretRef:\n                name: relay-env", "secretName: relay-config"} {
		if !strings.Contains(dep, want) {
			t.Errorf("Deployment lacks %q", want)
		}
	}
	if strings.Contains(string(raw), "kind: ConfigMap") {
		t.Errorf("relay.json holds ha1 values (password-equivalent): a Secret, not a ConfigMap")
	}

	svc := kinds["Service/rtsptunnel-relay"]
	for _, want := range []string{"port: 443\n      targetPort: wss", "port: 8554\n      targetPort: rtsp", "port: 8322\n      targetPort: rtsps"} {
		if !strings.Contains(svc, want) {
			t.Errorf("Service lacks %q", want)
		}
	}
	for _, want := range []string{"name: wss\n              containerPort: 8443", "name: rtsp\n              containerPort: 8554", "name: rtsps\n              containerPort: 8322"} {
		if !strings.Contains(dep, want) {
			t.Errorf("Deployment ports lack %q", want)
		}
	}

	// relay.json: the block under "relay.json: |", indentation removed.
	cfgDoc := kinds["Secret/relay-config"]
	m := regexp.MustCompile(`(?m)^  relay\.json: \|\n((?:    .*\n?)+)`).FindStringSubmatch(cfgDoc)
	if m == nil {
		t.Fatal("Secret/relay-config has no relay.json block")
	}
	var js strings.Builder
	for _, l := range strings.Split(m[1], "\n") {
		js.WriteString(strings.TrimPrefix(l, "    ") + "\n")
	}
	cfg := config.Default()
	if err := config.Decode([]byte(js.String()), cfg); err != nil {
		t.Errorf("relay.json in Secret/relay-config: %v", err)
	}
	if !json.Valid([]byte(js.String())) {
		t.Errorf("relay.json is not JSON:\n%s", js.String())
	}
	// Every passwordEnv has its variable in Secret/relay-env.
	for _, cam := range cfg.Cameras {
		if cam.PasswordEnv != "" && !strings.Contains(kinds["Secret/relay-env"], "  "+cam.PasswordEnv+":") {
			t.Errorf("camera %s: passwordEnv %s is not in Secret/relay-env", cam.Name, cam.PasswordEnv)
		}
	}
	if !strings.Contains(kinds["Secret/relay-env"], "  IOTHUB_SERVICE_CONNECTION_STRING:") {
		t.Errorf("Secret/relay-env lacks IOTHUB_SERVICE_CONNECTION_STRING")
	}
}

// TestHealthcheckDefault: the image's HEALTHCHECK and the probes run
// "relay healthcheck" without --url, so the default URL must be the default
// metricsListen, which the manifest and the unit keep.
func TestHealthcheckDefault(t *testing.T) {
	if want := "http://" + config.Default().MetricsListen + "/healthz"; app.DefaultHealthcheckURL != want {
		t.Errorf("relay healthcheck checks %s, but metricsListen defaults to %s", app.DefaultHealthcheckURL, want)
	}
	for _, f := range []string{"kubernetes.yaml", "relay.service"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("--metrics-listen")) {
			t.Errorf("%s moves metricsListen: the healthcheck then needs --url", f)
		}
	}
}
