package suite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/load"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/tools/camerasim/camera"
)

const (
	edgeDevice = "edge-device"
	moduleID   = "rtsptunnel"
	// The module's localPorts: the load camera, the camera simulator and
	// the fan-out test's RTSP camera.
	loadPort = 554
	simPort  = 555
	fanPort  = 556
	// fanCamera is the relay's shared camera in front of the RTSP camera,
	// for fanUser only.
	fanCamera = "fan"
	fanUser   = "bench"
)

// env is everything a run measures, all on loopback:
//
//	player ─► relay :load/:sim ══wss══► module ─► load camera / camera simulator   (passthrough)
//	players ─► relay :rtsp/fan ══wss══► module ─► RTSP camera                    (shared, fan-out)
//	player ─► chisel client ══wss (TLS) + SSH══► chisel server ─► same cameras
//	player ─► cameras directly (raw TCP)
//
// IoT Hub is the emulator (tools/edgeemu, its own process so that the
// harness's load cannot starve it), which the relay calls over its REST API.
type env struct {
	opts Options
	dir  string
	bins binaries

	emu        *harness.Process
	moduleEnv  []string         // the emulator's module.env
	imageEnv   []string         // the ENV of the module's image (Dockerfile.amd64)
	serviceEnv []string         // the emulator's service.env
	cam        *load.Camera     // in-process
	sim        *camera.Server   // in-process RTSP camera simulator
	fanCam     *load.RTSPCamera // in-process; the shared camera's source
	relayUsers string           // the relay's config file: fanUser's entry
	fanPass    string           // fanUser's password
	log        io.Writer        // process output echo, or nil

	relay      *harness.Process
	relayLoad  string // player addresses on the relay
	relaySim   string
	relayFan   string // the shared camera's URL with fanUser's credentials
	relayMetr  string // metrics URL
	relayPprof string // host:port of the pprof hook, with --profile

	module      *harness.Process
	moduleMetr  string // metrics URL
	modulePprof string

	chiselServer, chiselClient *harness.Process

	// The reference tunnel (tests/bench/cmd/tlsfwd): tlsfwdIn takes the
	// player's TCP and dials tlsfwdOut with TLS, which dials the camera.
	tlsfwdIn, tlsfwdOut   *harness.Process
	tlsfwdLoad            string // player address of the reference tunnel
	tlsfwdSim             string // the same in front of the camera simulator (a second pair)
	chiselLoad, chiselSim string

	closers []func()
}

func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// stop stops p and keeps its output in the work folder as <name>.log.
func (e *env) stop(p *harness.Process) func() {
	return func() {
		if _, _, err := p.Stop(15 * time.Second); err != nil {
			e.progress("warning: %v", err)
		}
		os.WriteFile(filepath.Join(e.dir, p.Name+".log"), []byte(p.Output()+"\n"), 0o644)
	}
}

func (e *env) progress(format string, args ...any) {
	fmt.Fprintf(e.opts.Progress, "bench: "+format+"\n", args...)
}

// setup builds the binaries and starts everything.
func setup(ctx context.Context, o Options) (_ *env, err error) {
	e := &env{opts: o}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	e.dir = o.WorkDir
	if o.Verbose {
		e.log = o.Progress
	}
	bin := filepath.Join(e.dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	if e.imageEnv, err = ImageEnv(o.Root); err != nil {
		return nil, err
	}
	e.progress("building the module, the relay and chisel %s", ChiselVersion)
	if e.bins, err = build(ctx, o.Root, bin, o.ProfileDir != ""); err != nil {
		return nil, err
	}

	e.cam = &load.Camera{}
	if err := e.cam.Initialize(); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.cam.Close)
	e.sim = &camera.Server{}
	if err := e.sim.Initialize(); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.sim.Close)
	e.fanCam = &load.RTSPCamera{BitsPerSec: o.StreamBps, FPS: o.FPS}
	if err := e.fanCam.Initialize(); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.fanCam.Close)
	if err := e.writeRelayUsers(ctx); err != nil {
		return nil, err
	}

	if err := e.startEmulator(ctx); err != nil {
		return nil, err
	}

	if err := e.startRelay(ctx, "relay"); err != nil {
		return nil, err
	}
	if err := e.startModule(ctx, "rtsptunnel"); err != nil {
		return nil, err
	}
	if err := e.startTLSForwarders(ctx); err != nil {
		return nil, err
	}
	if err := e.startChisel(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// startEmulator runs tools/edgeemu on free ports and reads its env files.
func (e *env) startEmulator(ctx context.Context) error {
	dir := filepath.Join(e.dir, "emu")
	p, err := harness.Start(ctx, "edgeemu", e.bins.emulator, []string{
		"--dir", dir, "--mqtt-port", "0", "--https-port", "0", "--log-level", "warn",
		"--module", edgeDevice + "/" + moduleID,
	}, &harness.StartOptions{Echo: e.log})
	if err != nil {
		return err
	}
	e.emu = p
	e.closers = append(e.closers, e.stop(p))
	if _, err := p.WaitContains(ctx, `"ready":true`); err != nil {
		return fmt.Errorf("emulator: %w\n%s", err, p.Output())
	}
	if e.moduleEnv, err = readEnvFile(filepath.Join(dir, "module.env")); err != nil {
		return err
	}
	e.serviceEnv, err = readEnvFile(filepath.Join(dir, "service.env"))
	return err
}

// readEnvFile reads KEY=VALUE lines (docker --env-file format).
// ImageEnv returns the environment the module's image sets for the module
// (the ENV instructions of Dockerfile.amd64's final stage), so that the
// benchmark runs the module as it ships.
func ImageEnv(root string) ([]string, error) {
	path := filepath.Join(root, "modules/rtsptunnel/Dockerfile.amd64")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var env []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case strings.EqualFold(f[0], "FROM"):
			env = nil // a new stage
		case strings.EqualFold(f[0], "ENV"):
			for _, kv := range f[1:] {
				if !strings.Contains(kv, "=") {
					return nil, fmt.Errorf("%s: ENV %q: want KEY=VALUE pairs", path, strings.Join(f[1:], " "))
				}
				env = append(env, kv)
			}
		}
	}
	return env, nil
}

func readEnvFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var env []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && strings.Contains(line, "=") {
			env = append(env, line)
		}
	}
	return env, nil
}

// startRelay starts the relay, named name in logs.
func (e *env) startRelay(ctx context.Context, name string) error {
	var env []string
	env = append(env, e.serviceEnv...)
	if e.opts.ProfileDir != "" {
		e.relayPprof = freeAddr()
		env = append(env, "BENCH_PPROF_ADDR="+e.relayPprof)
	}
	env = append(env, e.opts.RelayEnv...)
	// The load camera and the camera simulator are passthrough cameras
	// open to anyone (--allow-anonymous, no users): version 1's byte
	// splice, one tunnel per player with tunnelOpen at the player's
	// connect, which the throughput, concurrency, open-latency, rtt and
	// memory tests measure. The fan-out camera is shared (the default
	// mode) and needs fanUser's Digest credentials.
	passthrough := func(name string, port int) string {
		return fmt.Sprintf("name=%s,mode=passthrough,deviceId=%s,moduleId=%s,localPort=%d,listen=127.0.0.1:0,rtspPath=stream", name, edgeDevice, moduleID, port)
	}
	p, err := harness.Start(ctx, name, e.bins.relay, []string{
		"--self-signed", "--self-signed-cert-file", filepath.Join(e.dir, "relay-ca.pem"),
		"--config", e.relayUsers,
		"--allow-anonymous",
		"--ws-listen", "127.0.0.1:0",
		"--metrics-listen", "127.0.0.1:0",
		"--rtsp-listen", "127.0.0.1:0",
		// One camera serves every tunnel of the concurrency test, and 100
		// players and the joins read the shared camera.
		"--max-players-per-camera", "0", "--max-players", "0",
		// Idle tunnels are measured on purpose (the memory test); version 1
		// had no idle timeout.
		"--idle-timeout", "1h",
		// The fan-out test holds a viewer throughout; a short linger lets
		// the shared tunnel close soon after it (drain waits for it).
		"--linger", "2s",
		"--camera", passthrough("load", loadPort),
		"--camera", passthrough("sim", simPort),
		"--camera", fmt.Sprintf("name=%s,deviceId=%s,moduleId=%s,localPort=%d,rtspPath=%s,users=%s",
			fanCamera, edgeDevice, moduleID, fanPort, strings.TrimPrefix(load.RTSPPath, "/"), fanUser),
	}, &harness.StartOptions{Env: env, Echo: e.log})
	if err != nil {
		return err
	}
	e.relay = p
	e.closers = append(e.closers, e.stop(p))
	ready, err := harness.WaitRelayReady(ctx, p)
	if err != nil {
		return err
	}
	e.relayMetr = ready.MetricsURL
	for _, c := range ready.Cameras {
		switch c.Name {
		case "load":
			e.relayLoad = c.Listen
		case "sim":
			e.relaySim = c.Listen
		case fanCamera:
			u, err := url.Parse(c.RTSPURL)
			if err != nil {
				return fmt.Errorf("relay ready line: camera %s: %w", fanCamera, err)
			}
			u.User = url.UserPassword(fanUser, e.fanPass)
			e.relayFan = u.String()
		}
	}
	if e.relayLoad == "" || e.relaySim == "" || e.relayFan == "" {
		return fmt.Errorf("relay ready line without every camera: %+v", ready.Cameras)
	}
	return nil
}

// writeRelayUsers makes fanUser's users[] entry with the relay's own
// hash-password subcommand (as an operator would), for a random password,
// and writes the relay's config file holding it.
func (e *env) writeRelayUsers(ctx context.Context) error {
	pass := make([]byte, 12)
	rand.Read(pass)
	e.fanPass = hex.EncodeToString(pass)
	cmd := exec.CommandContext(ctx, e.bins.relay, "hash-password", "--user", fanUser)
	cmd.Stdin = strings.NewReader(e.fanPass + "\n")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("relay hash-password: %w", err)
	}
	e.relayUsers = filepath.Join(e.dir, "relay-users.json")
	return os.WriteFile(e.relayUsers, []byte(`{"users": [`+strings.TrimSpace(string(out))+`]}`), 0o600)
}

// startModule starts the module, named name in logs, with the extra
// environment on top of the benchmark's settings.
func (e *env) startModule(ctx context.Context, name string, extra ...string) error {
	env := append([]string(nil), e.moduleEnv...)
	metrics := freeAddr()
	e.moduleMetr = "http://" + metrics + "/metrics"
	env = append(env,
		fmt.Sprintf(`RTSPTUNNEL_TARGETS={"%d":"%s","%d":"%s","%d":"%s"}`, loadPort, e.cam.ListenAddr(), simPort, e.sim.ListenAddr(), fanPort, e.fanCam.ListenAddr()),
		"RTSPTUNNEL_REMOTECAFILE="+filepath.Join(e.dir, "relay-ca.pem"),
		"RTSPTUNNEL_ALLOWEDREMOTEHOSTS=127.0.0.1", // the relay is on loopback: name it
		"RTSPTUNNEL_METRICSADDR="+metrics,
		"RTSPTUNNEL_MAXSESSIONS=1000",
		// Idle tunnels are measured on purpose; everything else is the default.
		"RTSPTUNNEL_IDLETIMEOUT=0s",
	)
	if e.opts.ProfileDir != "" {
		e.modulePprof = freeAddr()
		env = append(env, "BENCH_PPROF_ADDR="+e.modulePprof)
	}
	env = append(env, e.imageEnv...)
	env = append(env, e.opts.ModuleEnv...)
	env = append(env, extra...)
	p, err := harness.Start(ctx, name, e.bins.module, nil, &harness.StartOptions{Env: env, Echo: e.log})
	if err != nil {
		return err
	}
	e.module = p
	e.closers = append(e.closers, e.stop(p))
	// Ready when a tunnel opens: the module has subscribed to methods.
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		_, err := e.openOnce(wctx)
		if err == nil {
			return nil
		}
		if wctx.Err() != nil {
			return fmt.Errorf("no tunnel opened within a minute of the module's start: %w\n%s", err, p.Output())
		}
		testutil.Sleep(wctx, 200*time.Millisecond)
	}
}

// restart stops the relay and the module and starts them again, fresh (so
// that memory figures do not carry an earlier step's peak), the module with
// the extra environment. tag names their log files.
func (e *env) restart(ctx context.Context, tag string, moduleEnv ...string) error {
	if err := e.drain(ctx); err != nil {
		return err
	}
	e.stop(e.module)()
	e.stop(e.relay)()
	if err := e.startRelay(ctx, "relay-"+tag); err != nil {
		return err
	}
	return e.startModule(ctx, "rtsptunnel-"+tag, moduleEnv...)
}

// startChisel runs chisel's server (TLS, like the relay) in front of the
// cameras and its client with one local port per camera.
func (e *env) startChisel(ctx context.Context) error {
	ca, cert, key, err := writeCerts(e.dir)
	if err != nil {
		return err
	}
	server := freeAddr()
	host, port, _ := net.SplitHostPort(server)
	s, err := harness.Start(ctx, "chisel-server", e.bins.chisel, []string{
		"server", "--host", host, "--port", port, "--tls-cert", cert, "--tls-key", key,
	}, &harness.StartOptions{Echo: e.log})
	if err != nil {
		return err
	}
	e.chiselServer = s
	e.closers = append(e.closers, e.stop(s))
	if _, err := s.WaitContains(ctx, "Listening on"); err != nil {
		return fmt.Errorf("chisel server: %w\n%s", err, s.Output())
	}
	e.chiselLoad, e.chiselSim = freeAddr(), freeAddr()
	c, err := harness.Start(ctx, "chisel-client", e.bins.chisel, []string{
		"client", "--tls-ca", ca, "https://" + server,
		e.chiselLoad + ":" + e.cam.ListenAddr(),
		e.chiselSim + ":" + e.sim.ListenAddr(),
	}, &harness.StartOptions{Echo: e.log})
	if err != nil {
		return err
	}
	e.chiselClient = c
	e.closers = append(e.closers, e.stop(c))
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.WaitContains(wctx, "Connected"); err != nil {
		return fmt.Errorf("chisel client: %w\n%s", err, c.Output())
	}
	return nil
}

// startTLSForwarders runs the reference tunnel: two tlsfwd processes with
// TLS between them, in front of the load generator's camera.
func (e *env) startTLSForwarders(ctx context.Context) error {
	dir := filepath.Join(e.dir, "tlsfwd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ca, cert, key, err := writeCerts(dir)
	if err != nil {
		return err
	}
	start := func(name string, args ...string) (*harness.Process, string, error) {
		p, err := harness.Start(ctx, name, e.bins.tlsfwd, args, &harness.StartOptions{Echo: e.log})
		if err != nil {
			return nil, "", err
		}
		e.closers = append(e.closers, e.stop(p))
		line, err := p.WaitContains(ctx, `"listen"`)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w\n%s", name, err, p.Output())
		}
		var ready struct{ Listen string }
		if err := json.Unmarshal([]byte(line), &ready); err != nil || ready.Listen == "" {
			return nil, "", fmt.Errorf("%s: bad ready line %q", name, line)
		}
		return p, ready.Listen, nil
	}
	var out string
	if e.tlsfwdOut, out, err = start("tlsfwd-out", "--to", e.cam.ListenAddr(), "--cert", cert, "--key", key); err != nil {
		return err
	}
	if e.tlsfwdIn, e.tlsfwdLoad, err = start("tlsfwd-in", "--to", out, "--ca", ca); err != nil {
		return err
	}
	if _, out, err = start("tlsfwd-sim-out", "--to", e.sim.ListenAddr(), "--cert", cert, "--key", key); err != nil {
		return err
	}
	_, e.tlsfwdSim, err = start("tlsfwd-sim-in", "--to", out, "--ca", ca)
	return err
}

// writeCerts writes a CA and a server certificate for 127.0.0.1 and localhost
// (ECDSA P-256, as the relay's --self-signed) for chisel's and tlsfwd's TLS.
func writeCerts(dir string) (caFile, certFile, keyFile string, err error) {
	ca, err := testutil.NewCA("bench CA")
	if err != nil {
		return "", "", "", err
	}
	return ca.WriteFiles(dir, "chisel", testutil.Localhost("127.0.0.1"))
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// gauge scrapes a Prometheus endpoint and returns the value of an unlabelled
// sample, or -1.
func gauge(ctx context.Context, url, name string) float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return -1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// drain waits until no tunnel is left anywhere: the module, the relay and the
// load camera report none.
func (e *env) drain(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		m := gauge(ctx, e.moduleMetr, "rtsptunnel_sessions_active")
		r := gauge(ctx, e.relayMetr, "relay_sessions_active")
		if m == 0 && r == 0 && e.cam.Active() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tunnels did not drain: module %v, relay %v, camera %d", m, r, e.cam.Active())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
