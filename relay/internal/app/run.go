package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/config"
)

// Exit statuses of Run.
const (
	ExitOK     = 0
	ExitFailed = 1 // start-up failed (listen, certificates, credentials)
	ExitUsage  = 2 // bad flags or configuration
)

// Run is the relay program: it loads the configuration from args and
// getenv, starts the relay, writes the ready line to stdout, and runs until
// ctx is done (main cancels it on SIGTERM/SIGINT). Help goes to stdout,
// logs and errors to stderr.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "relay: %s\nRun 'relay --help' for the settings.\n", strings.ReplaceAll(err.Error(), "\n", "\nrelay: "))
		return ExitUsage
	}
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel)) // validated
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a := &App{Config: cfg, Logger: logger, Registry: reg}
	if err := a.Initialize(); err != nil {
		logger.Error("relay failed to start", "error", err.Error())
		return ExitFailed
	}
	line, _ := json.Marshal(a.Ready())
	fmt.Fprintf(stdout, "%s\n", line)

	<-ctx.Done()
	logger.Info("relay shutting down", "sessions", a.core.Active())
	a.Close()
	logger.Info("relay stopped")
	return ExitOK
}
