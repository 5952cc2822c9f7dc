package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/identity"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/logging"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
)

// Version is the module version, stamped at build time with
// -ldflags "-X github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/app.Version=1.2.3".
var Version = "dev"

// Exit codes of Main.
const (
	exitOK      = 0
	exitFailure = 1 // a failure while running, or the identity could not be loaded
	exitUsage   = 2 // bad flags, settings or a missing identity: fix the configuration
)

// identityTimeout bounds reading the identity at start (the workload API call).
const identityTimeout = 30 * time.Second

// Main runs the module with the command-line arguments and environment given
// and returns the process exit code. It returns when SIGTERM or SIGINT
// arrives (after a clean shutdown) or on a fatal error.
func Main(args, environ []string, stdout, stderr io.Writer) int {
	env := envMap(environ)
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	getenv := func(k string) string { return env[k] }

	// Every line on stderr goes through the logger, start-up errors too, so
	// that each carries the syslog prefix IoT Edge filters on. Until the
	// settings are loaded it uses the logFormat variable as given (the
	// default when that is invalid too) and level info.
	level := new(slog.LevelVar)
	logger := logging.New(stderr, startFormat(env), level)

	fs := flag.NewFlagSet("rtsptunnel", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the error is logged below, the usage goes to stdout
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() { usage(stdout) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		logger.Error("invalid command line: run rtsptunnel --help for the usage", "error", err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		logger.Error("unexpected argument: settings come from the environment (rtsptunnel --help)", "argument", fs.Arg(0))
		return exitUsage
	}
	if *version {
		fmt.Fprintf(stdout, "rtsptunnel %s (%s, %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	}

	cfg, err := settings.FromEnv(lookup)
	if err != nil {
		logger.Error("invalid settings", "error", err)
		return exitUsage
	}
	level.Set(cfg.SlogLevel())
	logger = logging.New(stderr, cfg.LogFormat, level)
	for _, name := range settings.UnknownEnv(environ) {
		logger.Warn("unknown setting in the environment, ignored (typo?)", "variable", name)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	idCtx, cancel := context.WithTimeout(ctx, identityTimeout)
	id, err := identity.Load(idCtx, getenv)
	cancel()
	var missing *identity.MissingError
	switch {
	case errors.Is(err, identity.ErrNoIdentity):
		logger.Error("no IoT Hub identity: run it as an IoT Edge module (IOTEDGE_WORKLOADURI and the other IOTEDGE_* variables), " +
			"under iotedgehubdev (EdgeHubConnectionString, EdgeModuleCACertificateFile), or set IOTHUB_CONNECTION_STRING")
		return exitUsage
	case errors.As(err, &missing):
		logger.Error("incomplete IoT Hub identity", "error", err)
		return exitUsage
	case err != nil:
		logger.Error("failed to load the identity", "error", err)
		return exitFailure
	}

	a := &App{
		Settings: cfg,
		Identity: id,
		Logger:   logger,
		Level:    level,
		Version:  Version,
	}
	if err := a.Run(ctx); err != nil {
		logger.Error("rtsptunnel stopped", "error", err)
		return exitFailure
	}
	return exitOK
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `rtsptunnel %s: IoT Edge module that tunnels RTSP from cameras behind a firewall
to a cloud endpoint, on request of the tunnelOpen direct method
(IoT Plug and Play model dtmi:azure:videoanalyzer:WebSocketTunneling;1).

Usage: rtsptunnel [--help] [--version]
       rtsptunnel healthcheck [--url URL] [--timeout D]   exit 0 when /healthz on the metrics address answers 200

Identity, first match wins:
  1. IoT Edge: IOTEDGE_WORKLOADURI, IOTEDGE_IOTHUBHOSTNAME, IOTEDGE_GATEWAYHOSTNAME,
     IOTEDGE_DEVICEID, IOTEDGE_MODULEID, IOTEDGE_MODULEGENERATIONID, IOTEDGE_AUTHSCHEME=sasToken
     (set by the IoT Edge runtime)
  2. iotedgehubdev: EdgeHubConnectionString and EdgeModuleCACertificateFile
  3. IOTHUB_CONNECTION_STRING: a device or module connection string (optionally with
     GatewayHostName); IOTHUB_CA_FILE adds CA certificates to trust for the hub

`, Version)
	fmt.Fprint(w, settings.Usage())
}

// startFormat is the log format to use before the settings are loaded: the
// logFormat environment variable when it names a format, else the default.
func startFormat(env map[string]string) string {
	for _, f := range settings.Fields() {
		if f.Name == "logFormat" {
			switch v := env[f.Env]; v {
			case logging.FormatSyslog, logging.FormatJSON, logging.FormatText:
				return v
			}
		}
	}
	return settings.Defaults().LogFormat
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}
