package main

// Packaging tests: the IoT Edge solution files (module.json, the Dockerfiles,
// the deployment templates, scripts/gen-deployment.sh and
// scripts/build-images.sh) are checked against each other and against the
// code, and the module is cross-compiled the way the Dockerfiles build it.
// Docker itself is not needed: what only a Docker engine can check (the image
// builds, runs and reaches edgeHub) is described in the README.

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/app"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
)

// repoRoot is the repository root, seen from this package's folder (where go
// test runs).
const repoRoot = "../.."

// appVersionVar is the variable the Dockerfiles stamp with -ldflags -X. Naming
// app.Version here makes the test stop compiling if the variable goes away.
var appVersionVar = func() string {
	_ = app.Version
	return reflect.TypeFor[app.App]().PkgPath() + ".Version"
}()

// edgePlatform is one IoT Edge platform of module.json.
type edgePlatform struct {
	name           string // module.json key
	goarch, goarm  string
	dockerPlatform string // the final stage's --platform
	machine        elf.Machine
	debug          bool
}

var edgePlatforms = []edgePlatform{
	{name: "amd64", goarch: "amd64", dockerPlatform: "linux/amd64", machine: elf.EM_X86_64},
	{name: "amd64.debug", goarch: "amd64", dockerPlatform: "linux/amd64", machine: elf.EM_X86_64, debug: true},
	{name: "arm32v7", goarch: "arm", goarm: "7", dockerPlatform: "linux/arm/v7", machine: elf.EM_ARM},
	{name: "arm64v8", goarch: "arm64", dockerPlatform: "linux/arm64", machine: elf.EM_AARCH64},
}

// moduleJSON is the part of module.json the tools read.
type moduleJSON struct {
	Schema      string `json:"$schema-version"`
	Description string `json:"description"`
	Language    string `json:"language"`
	Image       struct {
		Repository string `json:"repository"`
		Tag        struct {
			Version   string            `json:"version"`
			Platforms map[string]string `json:"platforms"`
		} `json:"tag"`
		BuildOptions []string `json:"buildOptions"`
		ContextPath  string   `json:"contextPath"`
	} `json:"image"`
}

func readModuleJSON(t *testing.T) moduleJSON {
	t.Helper()
	var m moduleJSON
	mustDecodeStrict(t, "module.json", &m)
	return m
}

func mustDecodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestPackagingModuleJSON(t *testing.T) {
	m := readModuleJSON(t)
	if m.Schema != "0.0.1" {
		t.Errorf(`$schema-version = %q, want "0.0.1"`, m.Schema)
	}
	if want := "${CONTAINER_REGISTRY_SERVER}/rtsptunnel"; m.Image.Repository != want {
		t.Errorf("image.repository = %q, want %q", m.Image.Repository, want)
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$`).MatchString(m.Image.Tag.Version) {
		t.Errorf("image.tag.version %q is not a semantic version", m.Image.Tag.Version)
	}
	var names []string
	for _, p := range edgePlatforms {
		names = append(names, p.name)
		df, ok := m.Image.Tag.Platforms[p.name]
		if !ok {
			t.Errorf("image.tag.platforms has no %q", p.name)
			continue
		}
		if want := "./Dockerfile." + p.name; df != want {
			t.Errorf("platform %s: Dockerfile %q, want %q", p.name, df, want)
		}
		if _, err := os.Stat(df); err != nil {
			t.Errorf("platform %s: %v", p.name, err)
		}
	}
	for name := range m.Image.Tag.Platforms {
		if !slices.Contains(names, name) {
			t.Errorf("image.tag.platforms has %q, which this test does not know: add it to edgePlatforms", name)
		}
	}
	// The build context is this folder: the module's go.mod is standalone and
	// the Dockerfiles build it with GOWORK=off (TestPackagingCrossCompile).
	if m.Image.ContextPath != "./" {
		t.Errorf(`image.contextPath = %q, want "./"`, m.Image.ContextPath)
	}
	// The IoT Edge tools pass buildOptions to docker build: they stamp the version.
	if want := []string{"--build-arg VERSION=" + m.Image.Tag.Version}; !slices.Equal(m.Image.BuildOptions, want) {
		t.Errorf("image.buildOptions = %q, want %q (the same version as image.tag.version)", m.Image.BuildOptions, want)
	}
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case
	args string
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		cont := strings.HasSuffix(line, `\`)
		cur.WriteString(strings.TrimSuffix(line, `\`))
		cur.WriteByte(' ')
		if cont {
			continue
		}
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// goMinor returns the Go version of go.mod's go directive as major.minor
// ("1.26"), the form base images and GO_VERSION build args use.
func goMinor(t *testing.T) string {
	t.Helper()
	goMod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

func TestPackagingDockerfiles(t *testing.T) {
	m := readModuleJSON(t)
	context := filepath.Clean(m.Image.ContextPath)
	goVersion := goMinor(t)
	metricsPort := portOf(t, settings.Defaults().MetricsAddr)

	for _, p := range edgePlatforms {
		t.Run(p.name, func(t *testing.T) {
			path := m.Image.Tag.Platforms[p.name]
			if path == "" {
				t.Skip("not in module.json (TestPackagingModuleJSON fails)")
			}
			ins := parseDockerfile(t, path)
			var froms, runs, envs, exposes, users, entrypoints []instruction
			for _, in := range ins {
				switch in.cmd {
				case "FROM":
					froms = append(froms, in)
				case "RUN":
					runs = append(runs, in)
				case "ENV":
					envs = append(envs, in)
				case "EXPOSE":
					exposes = append(exposes, in)
				case "USER":
					users = append(users, in)
				case "ENTRYPOINT":
					entrypoints = append(entrypoints, in)
				case "COPY", "ADD":
					checkCopySources(t, path, context, in)
				}
			}
			if !slices.ContainsFunc(ins, func(in instruction) bool {
				return in.cmd == "ARG" && in.args == "GO_VERSION="+goVersion
			}) {
				t.Errorf("%s: want ARG GO_VERSION=%s (go.mod's go directive)", path, goVersion)
			}
			if len(froms) != 2 {
				t.Fatalf("%s: %d FROM instructions, want 2 (builder and final image)", path, len(froms))
			}
			if want := "--platform=${BUILDPLATFORM:-linux/amd64} golang:${GO_VERSION} AS build"; froms[0].args != want {
				t.Errorf("%s:%d: builder is FROM %s, want FROM %s (compile natively, cross-compile with GOOS/GOARCH; "+
					"linux/amd64 under the classic builder, which does not set BUILDPLATFORM)", path, froms[0].line, froms[0].args, want)
			}
			checkFromVariables(t, path, ins)
			checkLabels(t, path, ins, froms[1].line)
			checkHealthcheck(t, path, ins, froms[1].line, !p.debug)
			base := "gcr.io/distroless/static-debian12:nonroot"
			if p.debug {
				base = "gcr.io/distroless/static-debian12:debug-nonroot"
			}
			if want := "--platform=" + p.dockerPlatform + " " + base; froms[1].args != want {
				t.Errorf("%s:%d: final image is FROM %s, want FROM %s", path, froms[1].line, froms[1].args, want)
			}

			env := strings.Join(func() []string {
				var l []string
				for _, e := range envs {
					l = append(l, e.args)
				}
				return l
			}(), " ")
			for _, want := range []string{"CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=readonly"} {
				if !slices.Contains(strings.Fields(env), want) {
					t.Errorf("%s: ENV lacks %s", path, want)
				}
			}
			// The final image runs the module with one P, as measured by
			// scripts/bench (which reads it from Dockerfile.amd64).
			if !slices.ContainsFunc(envs, func(in instruction) bool {
				return in.line > froms[1].line && slices.Contains(strings.Fields(in.args), "GOMAXPROCS=1")
			}) {
				t.Errorf("%s: the final stage lacks ENV GOMAXPROCS=1", path)
			}
			var build *instruction
			for i := range runs {
				if strings.Contains(runs[i].args, "go build") {
					if build != nil {
						t.Fatalf("%s: more than one RUN with go build", path)
					}
					build = &runs[i]
				}
			}
			if build == nil {
				t.Fatalf("%s: no RUN with go build", path)
			}
			wantEnv := []string{"GOOS=linux", "GOARCH=" + p.goarch}
			if p.goarm != "" {
				wantEnv = append(wantEnv, "GOARM="+p.goarm)
			}
			words := strings.Fields(build.args)
			for _, w := range wantEnv {
				if !slices.Contains(words, w) {
					t.Errorf("%s:%d: go build without %s", path, build.line, w)
				}
			}
			if !slices.Contains(words, "-trimpath") {
				t.Errorf("%s:%d: go build without -trimpath", path, build.line)
			}
			if want := "-X " + appVersionVar + "=${VERSION}"; !strings.Contains(build.args, want) {
				t.Errorf("%s:%d: go build does not stamp the version with %q", path, build.line, want)
			}
			stripped := strings.Contains(build.args, `-ldflags "-s -w `)
			noOpt := strings.Contains(build.args, `-gcflags="all=-N -l"`)
			if p.debug && (stripped || !noOpt) {
				t.Errorf("%s:%d: a debug build keeps symbols (no -s -w) and disables optimizations (-gcflags=\"all=-N -l\")", path, build.line)
			}
			if !p.debug && (!stripped || noOpt) {
				t.Errorf("%s:%d: a release build is optimized and stripped (-ldflags \"-s -w ...\")", path, build.line)
			}

			var ports []string
			for _, e := range exposes {
				ports = append(ports, strings.Fields(e.args)...)
			}
			if !slices.Contains(ports, metricsPort) {
				t.Errorf("%s: EXPOSE %v lacks the metrics port %s (settings default metricsAddr)", path, ports, metricsPort)
			}
			if len(users) == 0 {
				t.Errorf("%s: no USER: the module must not run as root", path)
			} else if u := users[len(users)-1].args; u == "root" || u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root:") {
				t.Errorf("%s: USER %s: the module must not run as root", path, u)
			}
			if len(entrypoints) != 1 || !strings.HasPrefix(entrypoints[0].args, "[") {
				t.Errorf("%s: want one ENTRYPOINT in exec form (distroless has no shell)", path)
			} else {
				var argv []string
				if err := json.Unmarshal([]byte(entrypoints[0].args), &argv); err != nil {
					t.Errorf("%s: ENTRYPOINT: %v", path, err)
				} else if !slices.Contains(argv, "/rtsptunnel") {
					t.Errorf("%s: ENTRYPOINT %q does not run /rtsptunnel", path, argv)
				}
			}
		})
	}
}

// buildkitPlatformArgs are the ARGs BuildKit sets by itself. A default
// declared for one in the global scope replaces BuildKit's value (moby/buildkit
// frontend/dockerfile/dockerfile2llb buildMetaArgs; docker/buildx#510), so
// they are declared without one and FROM gives the fallback instead.
var buildkitPlatformArgs = []string{"BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
	"TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT"}

// fromVariable matches $VAR, ${VAR} and ${VAR<op>word} in a FROM line.
var fromVariable = regexp.MustCompile(`\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])([^}]*))?\})`)

// checkFromVariables checks that every FROM line also works with the
// classic builder (iotedgedev build/push through docker-py), which sets none
// of BuildKit's platform ARGs: each variable in a FROM has a non-empty
// fallback, either ${VAR:-fallback} or a global ARG VAR=default declared
// before the first FROM; and no BuildKit platform ARG gets a global default,
// which would override BuildKit's real value.
func checkFromVariables(t *testing.T, path string, ins []instruction) {
	t.Helper()
	globals := map[string]string{} // ARGs before the first FROM: name → default
	seenFrom := false
	for _, in := range ins {
		switch in.cmd {
		case "ARG":
			if seenFrom {
				continue // stage-scoped: not visible to FROM
			}
			for _, decl := range strings.Fields(in.args) {
				name, def, _ := strings.Cut(decl, "=")
				globals[name] = strings.Trim(def, `"'`)
				if def != "" && slices.Contains(buildkitPlatformArgs, name) {
					t.Errorf("%s:%d: ARG %s: a default for a BuildKit platform ARG replaces BuildKit's value on every build; "+
						"declare it without one and write ${%s:-fallback} in FROM", path, in.line, decl, name)
				}
			}
		case "FROM":
			seenFrom = true
			for _, m := range fromVariable.FindAllStringSubmatch(in.args, -1) {
				name, op, word := m[1]+m[2], m[3], m[4]
				if op == ":-" && word != "" {
					continue
				}
				if op != "" {
					t.Errorf("%s:%d: FROM %s: %s: only ${VAR} and ${VAR:-fallback} are checked here", path, in.line, in.args, m[0])
					continue
				}
				if globals[name] == "" {
					t.Errorf("%s:%d: FROM %s: %s has no non-empty fallback: the classic builder (iotedgedev) sets no platform ARGs, "+
						"so declare ARG %s=<default> before the first FROM or write ${%s:-<fallback>}", path, in.line, in.args, m[0], name, name)
				}
			}
		}
	}
}

// labelPair matches key=value and key="value" in a LABEL instruction.
var labelPair = regexp.MustCompile(`([^\s=]+)=("(?:[^"\\]|\\.)*"|\S+)`)

// imageSource is the repository named by the images' source label.
const imageSource = "https://github.com/rtsptunnel/rtsptunnel"

// checkLabels checks the final stage's OCI annotations: title, description,
// version stamped from the VERSION build argument, source and license.
func checkLabels(t *testing.T, path string, ins []instruction, finalFrom int) {
	t.Helper()
	labels := map[string]string{}
	versionArg := false
	for _, in := range ins {
		if in.line < finalFrom {
			continue
		}
		switch in.cmd {
		case "ARG":
			versionArg = versionArg || strings.HasPrefix(in.args, "VERSION")
		case "LABEL":
			for _, m := range labelPair.FindAllStringSubmatch(in.args, -1) {
				labels[m[1]] = strings.Trim(m[2], `"`)
			}
		}
	}
	want := map[string]string{
		"org.opencontainers.image.version":  "${VERSION}",
		"org.opencontainers.image.source":   imageSource,
		"org.opencontainers.image.licenses": "MIT",
	}
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("%s: final stage LABEL %s=%q, want %q", path, k, labels[k], v)
		}
	}
	for _, k := range []string{"org.opencontainers.image.title", "org.opencontainers.image.description"} {
		if labels[k] == "" {
			t.Errorf("%s: final stage lacks LABEL %s", path, k)
		}
	}
	if !versionArg {
		t.Errorf("%s: the final stage needs ARG VERSION for the version label", path)
	}
}

// checkHealthcheck checks the final stage's HEALTHCHECK: in exec form (no
// shell in distroless), running "/rtsptunnel healthcheck", with a timeout
// above the check's own 3 s bound so that the check reports its reason.
// Release images have one; the debug image has none (a module stopped at a
// breakpoint would be reported unhealthy).
func checkHealthcheck(t *testing.T, path string, ins []instruction, finalFrom int, want bool) {
	t.Helper()
	var hcs []instruction
	for _, in := range ins {
		if in.cmd == "HEALTHCHECK" && in.line > finalFrom {
			hcs = append(hcs, in)
		}
	}
	if !want {
		if len(hcs) > 0 {
			t.Errorf("%s:%d: the debug image must not have a HEALTHCHECK", path, hcs[0].line)
		}
		return
	}
	if len(hcs) != 1 {
		t.Errorf("%s: %d HEALTHCHECK instructions in the final stage, want 1", path, len(hcs))
		return
	}
	hc := hcs[0]
	opts, cmd, ok := strings.Cut(hc.args, "CMD ")
	if !ok {
		t.Errorf("%s:%d: HEALTHCHECK %s: want options then CMD [...]", path, hc.line, hc.args)
		return
	}
	var argv []string
	if err := json.Unmarshal([]byte(cmd), &argv); err != nil {
		t.Errorf("%s:%d: HEALTHCHECK CMD %s is not the exec form (distroless has no shell): %v", path, hc.line, cmd, err)
	} else if !slices.Equal(argv, []string{"/rtsptunnel", "healthcheck"}) {
		t.Errorf("%s:%d: HEALTHCHECK CMD %q, want [\"/rtsptunnel\", \"healthcheck\"]", path, hc.line, argv)
	}
	found := map[string]bool{}
	for _, o := range strings.Fields(opts) {
		k, v, _ := strings.Cut(o, "=")
		found[k] = true
		if k == "--timeout" {
			if d, err := time.ParseDuration(v); err != nil || d <= 3*time.Second {
				t.Errorf("%s:%d: HEALTHCHECK --timeout=%s: want more than the check's own 3s", path, hc.line, v)
			}
		}
	}
	for _, k := range []string{"--interval", "--timeout", "--start-period"} {
		if !found[k] {
			t.Errorf("%s:%d: HEALTHCHECK without %s", path, hc.line, k)
		}
	}
}

// TestPackagingLicense checks the LICENSE the images' licenses label names.
func TestPackagingLicense(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"MIT License", "Copyright (c) 2026 the rtsptunnel authors", "Permission is hereby granted, free of charge",
		`THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("LICENSE lacks %q", want)
		}
	}
}

// checkCopySources checks that the sources of a COPY from the build context
// exist in it.
func checkCopySources(t *testing.T, path, context string, in instruction) {
	t.Helper()
	var srcs []string
	for _, f := range strings.Fields(in.args) {
		if strings.HasPrefix(f, "--from=") {
			return // from another stage
		}
		if !strings.HasPrefix(f, "--") {
			srcs = append(srcs, f)
		}
	}
	if len(srcs) < 2 {
		t.Errorf("%s:%d: %s %s: want sources and a destination", path, in.line, in.cmd, in.args)
		return
	}
	for _, src := range srcs[:len(srcs)-1] {
		rel := filepath.Clean(src)
		if filepath.IsAbs(rel) || strings.HasPrefix(rel, "..") {
			t.Errorf("%s:%d: %s source %s is outside the build context", path, in.line, in.cmd, src)
			continue
		}
		matches, err := filepath.Glob(filepath.Join(context, rel))
		if err != nil || len(matches) == 0 {
			t.Errorf("%s:%d: %s source %s does not exist in the build context %s", path, in.line, in.cmd, src, context)
		}
	}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("metricsAddr %q: %v", addr, err)
	}
	return port
}

// TestPackagingCrossCompile builds the module for each architecture the way
// the Dockerfiles do (in this folder, GOWORK=off, static, trimmed, version
// stamped) and checks the binaries: architecture, statically linked, build
// settings; the one for this machine also runs and reports the version.
func TestPackagingCrossCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiling three architectures is slow; skipped with -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not on PATH")
	}
	const version = "9.8.7-packagingtest"
	for _, p := range edgePlatforms {
		if p.debug {
			continue // same architecture as its release build
		}
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "rtsptunnel")
			cmd := exec.Command(goBin, "build", "-trimpath",
				"-ldflags", "-s -w -X "+appVersionVar+"="+version, "-o", out, ".")
			cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+p.goarch, "GOARM="+p.goarm,
				"CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("GOOS=linux GOARCH=%s GOARM=%s GOWORK=off go build failed, and the Dockerfile build would fail the same way. "+
					"A \"missing go.sum entry\" means the module's go.sum lacks a sum that only the workspace (go.work.sum, "+
					"other modules' go.sum) has; add it with: cd modules/rtsptunnel && GOWORK=off go mod download <that module>\n%v\n%s",
					p.goarch, p.goarm, err, b)
			}

			f, err := elf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Machine != p.machine {
				t.Errorf("ELF machine %v, want %v", f.Machine, p.machine)
			}
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Errorf("the binary has an ELF interpreter: not statically linked (distroless/static has no libc)")
				}
			}
			info, err := buildinfo.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": p.goarch, "-trimpath": "true"}
			if p.goarm != "" {
				want["GOARM"] = p.goarm
			}
			for _, s := range info.Settings {
				if v, ok := want[s.Key]; ok {
					if s.Value != v {
						t.Errorf("build setting %s=%s, want %s", s.Key, s.Value, v)
					}
					delete(want, s.Key)
				}
			}
			if len(want) > 0 {
				t.Errorf("build settings lack %v", want)
			}

			if runtime.GOOS == "linux" && runtime.GOARCH == p.goarch {
				b, err := exec.Command(out, "--version").CombinedOutput()
				if err != nil {
					t.Fatalf("rtsptunnel --version: %v\n%s", err, b)
				}
				if wantPrefix := "rtsptunnel " + version + " "; !strings.HasPrefix(string(b), wantPrefix) {
					t.Errorf("rtsptunnel --version printed %q, want it to start with %q (-X %s)", b, wantPrefix, appVersionVar)
				}
			}
		})
	}
}

// deploymentTemplate is the part of a deployment template the tests read.
type deploymentTemplate struct {
	SchemaTemplate string `json:"$schema-template"`
	ModulesContent struct {
		EdgeAgent struct {
			Desired struct {
				SchemaVersion string `json:"schemaVersion"`
				Runtime       struct {
					Type     string `json:"type"`
					Settings struct {
						RegistryCredentials map[string]map[string]string `json:"registryCredentials"`
					} `json:"settings"`
				} `json:"runtime"`
				SystemModules map[string]edgeModule `json:"systemModules"`
				Modules       map[string]edgeModule `json:"modules"`
			} `json:"properties.desired"`
		} `json:"$edgeAgent"`
		EdgeHub struct {
			Desired struct {
				SchemaVersion   string            `json:"schemaVersion"`
				Routes          map[string]string `json:"routes"`
				StoreAndForward struct {
					TimeToLiveSecs int `json:"timeToLiveSecs"`
				} `json:"storeAndForwardConfiguration"`
			} `json:"properties.desired"`
		} `json:"$edgeHub"`
		Rtsptunnel struct {
			Desired json.RawMessage `json:"properties.desired"`
		} `json:"rtsptunnel"`
	} `json:"modulesContent"`
}

type edgeModule struct {
	Type          string `json:"type"`
	Status        string `json:"status"`
	RestartPolicy string `json:"restartPolicy"`
	Settings      struct {
		Image         string          `json:"image"`
		CreateOptions json.RawMessage `json:"createOptions"`
	} `json:"settings"`
	Env map[string]struct {
		Value string `json:"value"`
	} `json:"env"`
}

// createOptions is the part of a module's createOptions the tests read.
type createOptions struct {
	ExposedPorts map[string]struct{} `json:"ExposedPorts"`
	HostConfig   struct {
		Privileged   bool                           `json:"Privileged"`
		NetworkMode  string                         `json:"NetworkMode"`
		CapAdd       []string                       `json:"CapAdd"`
		PortBindings map[string][]map[string]string `json:"PortBindings"`
		LogConfig    struct {
			Type   string            `json:"Type"`
			Config map[string]string `json:"Config"`
		} `json:"LogConfig"`
	} `json:"HostConfig"`
}

var templates = []struct {
	file, image string
	debug       bool
}{
	{"deployment.template.json", "${MODULES.rtsptunnel}", false},
	{"deployment.debug.template.json", "${MODULES.rtsptunnel.debug}", true},
}

func TestPackagingDeploymentTemplates(t *testing.T) {
	metricsPort := portOf(t, settings.Defaults().MetricsAddr)
	for _, tc := range templates {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(repoRoot, tc.file)
			var d deploymentTemplate
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &d); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if d.SchemaTemplate != "4.0.0" {
				t.Errorf(`$schema-template = %q, want "4.0.0"`, d.SchemaTemplate)
			}
			agent := d.ModulesContent.EdgeAgent.Desired
			if agent.SchemaVersion == "" || agent.Runtime.Type != "docker" {
				t.Errorf("$edgeAgent: schemaVersion %q, runtime.type %q", agent.SchemaVersion, agent.Runtime.Type)
			}
			wantCreds := map[string]string{
				"address":  "${CONTAINER_REGISTRY_SERVER}",
				"username": "${CONTAINER_REGISTRY_USERNAME}",
				"password": "${CONTAINER_REGISTRY_PASSWORD}",
			}
			if len(agent.Runtime.Settings.RegistryCredentials) != 1 {
				t.Errorf("registryCredentials: want one registry from .env, got %v", agent.Runtime.Settings.RegistryCredentials)
			}
			for name, c := range agent.Runtime.Settings.RegistryCredentials {
				if !reflect.DeepEqual(c, wantCreds) {
					t.Errorf("registryCredentials.%s = %v, want %v", name, c, wantCreds)
				}
			}
			if img := agent.SystemModules["edgeAgent"].Settings.Image; img != "mcr.microsoft.com/azureiotedge-agent:1.5" {
				t.Errorf("edgeAgent image %q", img)
			}
			hub := agent.SystemModules["edgeHub"]
			if hub.Settings.Image != "mcr.microsoft.com/azureiotedge-hub:1.5" || hub.Status != "running" || hub.RestartPolicy != "always" {
				t.Errorf("edgeHub: image %q, status %q, restartPolicy %q", hub.Settings.Image, hub.Status, hub.RestartPolicy)
			}
			var hubOpts createOptions
			decodeCreateOptions(t, "edgeHub", hub.Settings.CreateOptions, &hubOpts)
			for _, port := range []string{"8883", "443", "5671"} {
				b := hubOpts.HostConfig.PortBindings[port+"/tcp"]
				if len(b) != 1 || b[0]["HostPort"] != port {
					t.Errorf("edgeHub createOptions: want %s/tcp bound to host port %s, got %v", port, port, b)
				}
			}

			if len(agent.Modules) != 1 {
				t.Errorf("modules: want only rtsptunnel, got %d", len(agent.Modules))
			}
			mod, ok := agent.Modules["rtsptunnel"]
			if !ok {
				t.Fatal("modules.rtsptunnel is missing")
			}
			if mod.Settings.Image != tc.image || mod.Status != "running" || mod.RestartPolicy != "always" || mod.Type != "docker" {
				t.Errorf("rtsptunnel: image %q (want %q), status %q, restartPolicy %q, type %q",
					mod.Settings.Image, tc.image, mod.Status, mod.RestartPolicy, mod.Type)
			}
			var opts createOptions
			decodeCreateOptions(t, "rtsptunnel", mod.Settings.CreateOptions, &opts)
			if _, ok := opts.ExposedPorts[metricsPort+"/tcp"]; !ok {
				t.Errorf("rtsptunnel createOptions: ExposedPorts lacks the metrics port %s/tcp", metricsPort)
			}
			hc := opts.HostConfig
			if hc.Privileged || hc.NetworkMode != "" {
				t.Errorf("rtsptunnel createOptions: Privileged %v, NetworkMode %q: the module needs neither (host networking is an option the README explains)", hc.Privileged, hc.NetworkMode)
			}
			if lc := hc.LogConfig; lc.Type != "json-file" || lc.Config["max-size"] == "" || lc.Config["max-file"] == "" {
				t.Errorf("rtsptunnel createOptions: want LogConfig json-file with max-size and max-file (log rotation), got %+v", lc)
			}
			if !tc.debug && (len(hc.CapAdd) > 0 || len(hc.PortBindings) > 0) {
				t.Errorf("rtsptunnel createOptions: CapAdd %v, PortBindings %v: the release module needs no capabilities and publishes no ports", hc.CapAdd, hc.PortBindings)
			}
			if tc.debug {
				if b := hc.PortBindings["40000/tcp"]; len(b) != 1 || b[0]["HostIp"] != "127.0.0.1" {
					t.Errorf("debug createOptions: Delve's port 40000 must be bound to 127.0.0.1 only (reach it through ssh -L), got %v", b)
				}
			}

			// The module environment and the desired properties are checked by
			// the module's own settings code: one source of truth.
			env := map[string]string{}
			var environ []string
			for k, v := range mod.Env {
				env[k] = v.Value
				environ = append(environ, k+"="+v.Value)
			}
			if unknown := settings.UnknownEnv(environ); len(unknown) > 0 {
				t.Errorf("rtsptunnel env: unknown settings %v", unknown)
			}
			if _, err := settings.FromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
				t.Errorf("rtsptunnel env: %v", err)
			}
			desired := d.ModulesContent.Rtsptunnel.Desired
			checkDesired(t, desired)

			routes := d.ModulesContent.EdgeHub.Desired.Routes
			if !slices.Contains(mapValues(routes), "FROM /messages/* INTO $upstream") {
				t.Errorf("$edgeHub routes %v: want the default route FROM /messages/* INTO $upstream", routes)
			}
			if d.ModulesContent.EdgeHub.Desired.SchemaVersion == "" || d.ModulesContent.EdgeHub.Desired.StoreAndForward.TimeToLiveSecs <= 0 {
				t.Errorf("$edgeHub: want schemaVersion and storeAndForwardConfiguration.timeToLiveSecs")
			}
		})
	}
}

// checkDesired requires every desired property to be accepted by the module
// (settings.Apply acknowledges it with 200) and the example to map cameras.
func checkDesired(t *testing.T, desired json.RawMessage) {
	t.Helper()
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(desired, &keys); err != nil || len(keys) == 0 {
		t.Fatalf("modulesContent.rtsptunnel.properties.desired: want an object of settings, got %s (%v)", desired, err)
	}
	next, acks := settings.Defaults().Apply(desired)
	if len(acks) != len(keys) {
		t.Errorf("desired properties: %d keys, %d acknowledgements", len(keys), len(acks))
	}
	for name, ack := range acks {
		if ack.AC != 200 {
			t.Errorf("desired property %s = %s: the module answers %d %q", name, keys[name], ack.AC, ack.AD)
		}
	}
	if len(next.Targets) == 0 {
		t.Errorf("desired properties: want an example of targets")
	}
}

func decodeCreateOptions(t *testing.T, module string, raw json.RawMessage, v *createOptions) {
	t.Helper()
	// In a $schema-template 4.0.0 template createOptions is an object; the
	// generated manifest has it as a string (TestPackagingGenDeployment).
	if len(raw) == 0 || raw[0] != '{' {
		t.Errorf("%s: createOptions must be a JSON object in the template, got %s", module, raw)
		return
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Errorf("%s createOptions: %v", module, err)
	}
}

func mapValues(m map[string]string) []string {
	var l []string
	for _, v := range m {
		l = append(l, v)
	}
	return l
}

// runScript runs a script of scripts/ with the registry variables set and
// the repository's own .env out of the way; it returns stdout.
func runScript(t *testing.T, script string, args ...string) (string, error) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not on PATH")
	}
	cmd := exec.Command(bash, append([]string{filepath.Join(repoRoot, "scripts", script)}, args...)...)
	var environ []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONTAINER_REGISTRY_") {
			environ = append(environ, kv)
		}
	}
	cmd.Env = append(environ,
		"CONTAINER_REGISTRY_SERVER=MyRegistry.azurecr.io",
		"CONTAINER_REGISTRY_USERNAME=pull-token",
		`CONTAINER_REGISTRY_PASSWORD=p&ss/w|rd"\x`, // characters that break naive sed substitution
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %v: %w\n%s", script, args, err, stderr.String())
	}
	return string(out), nil
}

func TestPackagingGenDeployment(t *testing.T) {
	m := readModuleJSON(t)
	noEnv := filepath.Join(t.TempDir(), "no.env") // the variables come from the environment
	cases := []struct {
		template, platform, out, imageTag string
		debug                             bool
	}{
		{"deployment.template.json", "amd64", "deployment.amd64.json", "amd64", false},
		{"deployment.template.json", "arm32v7", "deployment.arm32v7.json", "arm32v7", false},
		{"deployment.template.json", "arm64v8", "deployment.arm64v8.json", "arm64v8", false},
		{"deployment.debug.template.json", "amd64", "deployment.debug.amd64.json", "amd64.debug", true},
	}
	for _, tc := range cases {
		t.Run(tc.out, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			stdout, err := runScript(t, "gen-deployment.sh", "-t", tc.template, "-p", tc.platform, "-e", noEnv, "-o", dir)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, tc.out)
			if got := strings.TrimSpace(stdout); got != path {
				t.Errorf("printed %q, want the output path %q", got, path)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(raw, []byte("${")) {
				t.Errorf("%s still has placeholders:\n%s", tc.out, raw)
			}
			var doc map[string]any
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Fatalf("%s is not JSON: %v", tc.out, err)
			}
			if _, ok := doc["$schema-template"]; ok {
				t.Errorf("%s: $schema-template must be removed", tc.out)
			}
			var got, tmpl deploymentTemplate
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			tmplRaw, err := os.ReadFile(filepath.Join(repoRoot, tc.template))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(tmplRaw, &tmpl); err != nil {
				t.Fatal(err)
			}

			agent := got.ModulesContent.EdgeAgent.Desired
			wantImage := "myregistry.azurecr.io/rtsptunnel:" + m.Image.Tag.Version + "-" + tc.imageTag
			if img := agent.Modules["rtsptunnel"].Settings.Image; img != wantImage {
				t.Errorf("rtsptunnel image %q, want %q", img, wantImage)
			}
			wantCreds := map[string]string{"address": "MyRegistry.azurecr.io", "username": "pull-token", "password": `p&ss/w|rd"\x`}
			for _, c := range agent.Runtime.Settings.RegistryCredentials {
				if !reflect.DeepEqual(c, wantCreds) {
					t.Errorf("registry credentials %v, want %v", c, wantCreds)
				}
			}
			// createOptions becomes a string (split in 512-character pieces) that
			// decodes to the template's object.
			var settingsObj map[string]any
			if err := json.Unmarshal(mustJSONPath(t, raw, "modulesContent", "$edgeAgent", "properties.desired", "modules", "rtsptunnel", "settings"), &settingsObj); err != nil {
				t.Fatal(err)
			}
			joined := ""
			for i := 0; ; i++ {
				key := "createOptions"
				if i > 0 {
					key = fmt.Sprintf("createOptions%02d", i)
				}
				v, ok := settingsObj[key]
				if !ok {
					break
				}
				s, ok := v.(string)
				if !ok || len(s) > 512 {
					t.Fatalf("%s is not a string of at most 512 characters: %v", key, v)
				}
				joined += s
			}
			var gotOpts, wantOpts any
			if err := json.Unmarshal([]byte(joined), &gotOpts); err != nil {
				t.Fatalf("createOptions %q: %v", joined, err)
			}
			json.Unmarshal(tmpl.ModulesContent.EdgeAgent.Desired.Modules["rtsptunnel"].Settings.CreateOptions, &wantOpts)
			if !reflect.DeepEqual(gotOpts, wantOpts) {
				t.Errorf("createOptions %s, want the template's %s", joined, tmpl.ModulesContent.EdgeAgent.Desired.Modules["rtsptunnel"].Settings.CreateOptions)
			}
			checkDesired(t, got.ModulesContent.Rtsptunnel.Desired)
			if !jsonEqual(got.ModulesContent.Rtsptunnel.Desired, tmpl.ModulesContent.Rtsptunnel.Desired) {
				t.Errorf("desired properties changed: %s, want %s", got.ModulesContent.Rtsptunnel.Desired, tmpl.ModulesContent.Rtsptunnel.Desired)
			}
			if got.ModulesContent.EdgeHub.Desired.Routes["upstream"] != "FROM /messages/* INTO $upstream" {
				t.Errorf("routes %v: $upstream must survive the substitution", got.ModulesContent.EdgeHub.Desired.Routes)
			}
			if _, err := os.Stat(filepath.Join(dir, ".gitignore")); err != nil {
				t.Errorf("the output folder needs a .gitignore (the manifest holds the registry password): %v", err)
			}
		})
	}

	t.Run("debug template without a debug image for the platform", func(t *testing.T) {
		t.Parallel()
		_, err := runScript(t, "gen-deployment.sh", "-t", "deployment.debug.template.json", "-p", "arm64v8", "-e", noEnv, "-o", t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "${MODULES.rtsptunnel.debug}") {
			t.Errorf("want a failure naming ${MODULES.rtsptunnel.debug}, got %v", err)
		}
	})
}

func mustJSONPath(t *testing.T, raw []byte, keys ...string) json.RawMessage {
	t.Helper()
	cur := json.RawMessage(raw)
	for _, k := range keys {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(cur, &m); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		cur = m[k]
	}
	return cur
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func TestPackagingBuildImagesDryRun(t *testing.T) {
	m := readModuleJSON(t)
	out, err := runScript(t, "build-images.sh", "--dry-run", "-e", filepath.Join(t.TempDir(), "no.env"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(edgePlatforms) {
		t.Fatalf("want one docker buildx build per platform, got:\n%s", out)
	}
	for _, p := range edgePlatforms {
		want := fmt.Sprintf("+ docker buildx build --platform %s -f modules/rtsptunnel/Dockerfile.%s --build-arg VERSION=%s -t myregistry.azurecr.io/rtsptunnel:%s-%s --load modules/rtsptunnel",
			p.dockerPlatform, p.name, m.Image.Tag.Version, m.Image.Tag.Version, p.name)
		if !slices.Contains(lines, want) {
			t.Errorf("missing command:\n%s\ngot:\n%s", want, out)
		}
	}
}

// TestPackagingDevcontainer checks that the dev container gives what the
// scripts expect: the Go version of go.mod, ffmpeg and iperf3, Node.js 20, and
// scripts/setup.sh on create.
func TestPackagingDevcontainer(t *testing.T) {
	dir := filepath.Join(repoRoot, ".devcontainer")
	raw, err := os.ReadFile(filepath.Join(dir, "devcontainer.json"))
	if err != nil {
		t.Fatal(err)
	}
	// devcontainer.json is JSON with comments; ours has only whole-line ones.
	var lines []string
	for _, l := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "//") {
			lines = append(lines, l)
		}
	}
	var dc struct {
		Build struct {
			Dockerfile string `json:"dockerfile"`
		} `json:"build"`
		Features          map[string]map[string]any `json:"features"`
		PostCreateCommand map[string]string         `json:"postCreateCommand"`
	}
	if err := json.Unmarshal([]byte(strings.Join(lines, "\n")), &dc); err != nil {
		t.Fatalf("devcontainer.json: %v", err)
	}
	if dc.PostCreateCommand["setup"] != "scripts/setup.sh" {
		t.Errorf("postCreateCommand %v: want setup: scripts/setup.sh", dc.PostCreateCommand)
	}
	// Node.js 20 reached its end of life in April 2026; 22 is maintained.
	if v := dc.Features["ghcr.io/devcontainers/features/node:1"]["version"]; v != "22" {
		t.Errorf("node feature version %v, want 22", v)
	}
	df, err := os.ReadFile(filepath.Join(dir, dc.Build.Dockerfile))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := goMinor(t)
	if want := "FROM golang:" + goVersion + "-"; !bytes.Contains(df, []byte(want)) {
		t.Errorf("%s: want a %s... base image (go.mod's Go version)", dc.Build.Dockerfile, want)
	}
	for _, pkg := range []string{"ffmpeg", "iperf3"} {
		if !regexp.MustCompile(`\b` + pkg + `\b`).Match(df) {
			t.Errorf("%s does not install %s", dc.Build.Dockerfile, pkg)
		}
	}
}
