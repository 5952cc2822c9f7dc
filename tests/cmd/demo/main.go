// Command demo runs the whole rtsptunnel chain on one machine and plays video
// through it:
//
//	ffprobe (player) -> relay -> wss -> rtsptunnel module -> camera
//
// IoT Hub, edgeHub and the IoT Edge workload API are played by the embedded
// emulator; the camera is the simulator unless --camera names a real one.
// It prints what it does, then a short summary: tunnel open time, packets,
// bitrate, and the module's reported session state. scripts/demo.sh runs it.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
	"github.com/rtsptunnel/rtsptunnel/tools/camerasim/camera"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

const (
	edgeDevice = "edge-device"
	moduleID   = "rtsptunnel"
)

type options struct {
	camera     string
	cameraPath string
	user, pass string
	duration   time.Duration
	keep       bool
	workdir    string
	verbose    bool
}

func main() {
	var o options
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.StringVar(&o.camera, "camera", "", "host:port of your own RTSP camera (default: the built-in camera simulator)")
	fs.StringVar(&o.cameraPath, "camera-path", camera.DefaultPath, "RTSP path on the camera, e.g. /stream1")
	fs.StringVar(&o.user, "camera-user", "", "camera user name: the relay's shared upstream logs in to the camera with it")
	fs.StringVar(&o.pass, "camera-pass", "", "camera password (given to the relay through its environment, never on a command line)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "how much video to pull through the tunnel")
	fs.BoolVar(&o.keep, "keep", false, "keep everything running after the summary so you can play it (ffplay, VLC) until Ctrl-C")
	fs.StringVar(&o.workdir, "workdir", "", "folder for binaries, emulator state and logs (default: a new temporary folder, removed at the end)")
	fs.BoolVar(&o.verbose, "v", false, "echo every process's log lines")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: scripts/demo.sh [flags]\n\n"+
			"Runs player -> relay -> wss -> rtsptunnel module -> camera on this machine, with IoT Hub\n"+
			"played by the embedded emulator, and prints a summary.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "demo: --duration must be positive")
		os.Exit(2)
	}
	if o.camera != "" {
		if _, _, err := net.SplitHostPort(o.camera); err != nil {
			fmt.Fprintf(os.Stderr, "demo: --camera %q: want host:port, e.g. 192.168.1.20:554\n", o.camera)
			os.Exit(2)
		}
	}
	// SIGINT (Ctrl-C) or SIGTERM cancels ctx: run then stops everything it
	// started (each process with SIGTERM, killed after 10 s) and returns. A
	// second signal ends the driver at once. scripts/demo.sh execs the built
	// driver, not `go run`, so that the signals reach it.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, o)
	stop()
	switch {
	case err != nil && ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "demo: interrupted; everything it started is stopped")
		os.Exit(130)
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

func run(ctx context.Context, o options) error {
	workdir := o.workdir
	if workdir == "" {
		d, err := os.MkdirTemp("", "rtsptunnel-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		workdir = d
	} else if err := os.MkdirAll(workdir, 0o755); err != nil {
		return err
	}
	var echo io.Writer
	if o.verbose {
		echo = os.Stderr
	}

	step("building the rtsptunnel module and the relay (go build)")
	b := &harness.Builder{Dir: filepath.Join(workdir, "bin")}
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return err
	}
	moduleBin, err := b.Build(ctx, harness.Module)
	if err != nil {
		return err
	}
	relayBin, err := b.Build(ctx, harness.Relay)
	if err != nil {
		return err
	}

	camAddr, camPath := o.camera, o.cameraPath
	if camAddr == "" {
		cam := &camera.Server{Path: o.cameraPath}
		if err := cam.Initialize(); err != nil {
			return fmt.Errorf("camera simulator: %w", err)
		}
		defer cam.Close()
		camAddr = cam.ListenAddr()
		step("camera simulator serving %s (320x240 H.264, 25 fps)", cam.URL())
	} else {
		step("using your camera at %s%s", camAddr, camPath)
	}

	emuLog := slog.New(slog.DiscardHandler)
	if o.verbose {
		emuLog = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	emu, err := emulator.New(emulator.Options{Dir: filepath.Join(workdir, "emu"), Logger: emuLog})
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	defer emu.Close()
	step("IoT Hub/edgeHub emulator: MQTT on %s, REST on %s, identities in %s", emu.MQTTAddr(), emu.HTTPSAddr(), emu.Dir())

	// A viewer account for this run, made with the relay's own
	// hash-password: the config file holds only its HA1 and bcrypt hash.
	viewer, viewerPass := "demo", randomPassword()
	hashCmd := exec.CommandContext(ctx, relayBin, "hash-password", "--user", viewer)
	hashCmd.Stdin = strings.NewReader(viewerPass + "\n")
	entry, err := hashCmd.Output()
	if err != nil {
		return fmt.Errorf("relay hash-password: %w", err)
	}
	cfgFile := filepath.Join(workdir, "relay.json")
	if err := os.WriteFile(cfgFile, []byte(`{"users": [`+strings.TrimSpace(string(entry))+`]}`), 0o600); err != nil {
		return err
	}
	rtspPath := strings.TrimPrefix(camPath, "/")
	camSpec := fmt.Sprintf("name=demo,deviceId=%s,moduleId=%s,localPort=554,rtspPath=%s,users=%s", edgeDevice, moduleID, rtspPath, viewer)
	relayEnv := emu.ServiceEnv()
	if o.user != "" {
		camSpec += ",username=" + o.user + ",passwordEnv=DEMO_CAMERA_PASSWORD"
		relayEnv = append(relayEnv, "DEMO_CAMERA_PASSWORD="+o.pass)
	}
	// The processes outlive ctx: a signal cancels ctx, and the deferred
	// stopProcess calls stop them gracefully (harness.Start would kill them
	// at once when its context is done).
	procCtx := context.WithoutCancel(ctx)
	relay, err := harness.Start(procCtx, "relay", relayBin, []string{
		"--config", cfgFile,
		"--self-signed",
		"--ws-listen", "127.0.0.1:0",
		"--rtsp-listen", "127.0.0.1:0",
		"--metrics-listen", "127.0.0.1:0",
		// Browser playback: the page on the websocket listener, WebRTC
		// media on a UDP and a TCP port on every interface, so that a
		// browser on this machine reaches it through its LAN address
		// (browsers leave loopback out of WebRTC).
		"--webrtc-udp-listen", ":0",
		"--webrtc-tcp-listen", ":0",
		"--camera", camSpec,
	}, &harness.StartOptions{Env: relayEnv, Echo: echo})
	if err != nil {
		return err
	}
	defer stopProcess(relay)
	ready, err := harness.WaitRelayReady(ctx, relay)
	if err != nil {
		return err
	}
	playURL := ready.Camera("demo")
	webURL := readyWebURL(relay)
	step("relay: players connect to %s, the module dials back to %s", playURL, ready.WebsocketURL)

	env, err := emu.ModuleEnv(edgeDevice, moduleID)
	if err != nil {
		return err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	env = append(env,
		`RTSPTUNNEL_TARGETS={"554":"`+camAddr+`"}`,
		"RTSPTUNNEL_REMOTECAFILE="+ready.CAFile,
		// The demo's relay is on loopback, which the module refuses unless
		// allowedRemoteHosts names the host exactly.
		"RTSPTUNNEL_ALLOWEDREMOTEHOSTS=127.0.0.1",
		"RTSPTUNNEL_METRICSADDR="+metricsAddr,
	)
	module, err := harness.Start(procCtx, "rtsptunnel", moduleBin, nil, &harness.StartOptions{Env: env, Echo: echo})
	if err != nil {
		return err
	}
	defer stopProcess(module)
	waitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = emu.WaitSubscribed(waitCtx, edgeDevice, moduleID, "$iothub/methods/POST/#")
	cancel()
	if err != nil {
		return fmt.Errorf("the module did not connect to the emulator: %w\n%s", err, module.Output())
	}
	step("rtsptunnel module connected (model id %s), metrics on http://%s/metrics", emu.ModelID(edgeDevice, moduleID), metricsAddr)

	u, err := url.Parse(playURL)
	if err != nil {
		return err
	}
	u.User = url.UserPassword(viewer, viewerPass)
	playURL = u.String()
	const players = 3
	step("playing %s of video with %d ffprobe players at once through relay -> wss -> module -> camera (one shared tunnel)", o.duration, players)
	probeCtx, cancel := context.WithTimeout(ctx, o.duration+60*time.Second)
	probes := make([]harness.Probe, players)
	errs := make([]error, players)
	var wg sync.WaitGroup
	for i := range players {
		wg.Add(1)
		go func() {
			defer wg.Done()
			probes[i], errs[i] = harness.FFProbe(probeCtx, playURL, o.duration)
		}()
	}
	wg.Wait()
	cancel()
	probe := probes[0]
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("%w\nrelay log:\n%s\nmodule log:\n%s", err, relay.Output(), module.Output())
		}
		if probes[i].Packets == 0 {
			return fmt.Errorf("ffprobe read no video packets\nrelay log:\n%s\nmodule log:\n%s", relay.Output(), module.Output())
		}
	}
	metrics := scrape(ctx, ready.MetricsURL) // one scrape for every figure below
	edgeBytes := seriesValue(metrics, `relay_edge_bytes_total{camera="demo",direction="from_camera"}`)
	playerBytes := seriesValue(metrics, `relay_player_bytes_total{camera="demo"}`)

	openMs := histogramMean(metrics, "relay_upstream_open_duration_seconds") * 1000
	state := reportedState(ctx, emu)

	// What the player sees, from ffprobe (not what the camera claims).
	infoCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	info, err := harness.FFProbeStream(infoCtx, playURL)
	cancel()
	seen := info.String() + " (ffprobe)"
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		seen = "unknown: " + err.Error()
	}

	fmt.Println()
	fmt.Println("rtsptunnel demo: players -> relay -> wss -> module -> camera")
	if openMs >= 0 {
		fmt.Printf("  stream opened in     %.0f ms (first player's request to the camera's stream live through the tunnel, relay metric)\n", openMs)
	}
	fmt.Printf("  video                %s\n", seen)
	fmt.Printf("  video received       %d packets, %d keyframes, %d bytes in %s (first player; %d players)\n", probe.Packets, probe.Keyframes, probe.Bytes, o.duration, players)
	if edgeBytes > 0 {
		fmt.Printf("  fan-out              %.0f bytes from the edge, %.0f bytes to players (%.1fx): one stream on the site's uplink\n", edgeBytes, playerBytes, playerBytes/edgeBytes)
	}
	fmt.Printf("  player login         user %q, password %q (generated for this run; RTSP Digest)\n", viewer, viewerPass)
	if webURL != "" {
		fmt.Printf("  browser page         %s (log in with the same user and password; the certificate is self-signed: %s)\n", webURL, ready.CAFile)
	}
	fmt.Printf("  bitrate              %.0f kbit/s\n", float64(probe.Bytes)*8/o.duration.Seconds()/1000)
	fmt.Printf("  ffprobe run          %s (RTSP handshake through the tunnel + reading)\n", probe.Elapsed.Round(time.Millisecond))
	fmt.Printf("  module twin reported %s\n", state)
	fmt.Println()

	if o.keep {
		fmt.Printf("Everything keeps running. Play the camera through the tunnel with:\n  ffplay -rtsp_transport tcp '%s'\n", playURL)
		if webURL != "" {
			fmt.Printf("or open %s in a browser and log in as %q with password %q.\n", webURL, viewer, viewerPass)
		}
		fmt.Println("Press Ctrl-C to stop.")
		<-ctx.Done()
	}
	step("stopping")
	return nil
}

// reportedState summarizes the module twin's reported properties: the
// summary and the sessions.
func reportedState(ctx context.Context, emu *emulator.Emulator) string {
	// The module coalesces reports; give it a moment to publish the end of
	// the session.
	deadline := time.Now().Add(5 * time.Second)
	var rep map[string]json.RawMessage
	for time.Now().Before(deadline) && ctx.Err() == nil {
		_, raw, err := emu.Twin(edgeDevice, moduleID)
		if err == nil && json.Unmarshal(raw, &rep) == nil {
			if s, ok := rep["summary"]; ok && strings.Contains(string(s), `"opened":1`) {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	var b strings.Builder
	if s, ok := rep["summary"]; ok {
		fmt.Fprintf(&b, "summary %s", s)
	} else {
		b.WriteString("no summary yet")
	}
	if s, ok := rep["sessions"]; ok {
		fmt.Fprintf(&b, "\n                       sessions %s", s)
	}
	return b.String()
}

// scrape returns a Prometheus endpoint's text, or "" when it cannot be read.
func scrape(ctx context.Context, metricsURL string) string {
	if metricsURL == "" {
		return ""
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// seriesValue returns the value of one series in a scrape, or -1.
func seriesValue(metrics, series string) float64 {
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// randomPassword returns 16 random letters and digits.
func randomPassword() string {
	const chars = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 16)
	rand.Read(b)
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return string(b)
}

// histogramMean returns sum/count of a histogram in a scrape, or -1.
func histogramMean(metrics, name string) float64 {
	var sum, count float64 = -1, -1
	for _, line := range strings.Split(metrics, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(f[0], name+"_sum"):
			sum = v
		case strings.HasPrefix(f[0], name+"_count"):
			count = v
		}
	}
	if sum < 0 || count <= 0 {
		return -1
	}
	return sum / count
}

func stopProcess(p *harness.Process) {
	if _, _, err := p.Stop(10 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// readyWebURL returns the page's URL from the relay's ready line ("" when
// browser playback is off).
func readyWebURL(relay *harness.Process) string {
	for _, l := range relay.Lines() {
		if strings.HasPrefix(l, `{"ready":true`) {
			var r struct {
				WebURL string `json:"webURL"`
			}
			if json.Unmarshal([]byte(l), &r) == nil {
				return r.WebURL
			}
		}
	}
	return ""
}
