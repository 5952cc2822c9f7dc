package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/auth"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/config"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/logging"
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
	return RunWithInput(ctx, args, getenv, nil, stdout, stderr)
}

// RunWithInput is Run with standard input, which the hash-password
// subcommand reads. "relay healthcheck" checks a running relay's /healthz.
func RunWithInput(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "hash-password" {
		return hashPassword(args[1:], stdin, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(args[1:], stdout, stderr)
	}
	cfg, err := config.Load(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "relay: %s\nRun 'relay --help' for the settings.\n", strings.ReplaceAll(err.Error(), "\n", "\nrelay: "))
		return ExitUsage
	}
	level, _ := logging.ParseLevel(cfg.LogLevel) // validated
	logger := logging.New(stderr, cfg.LogFormat, level)

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

// hashPassword is "relay hash-password": it reads a password from the
// first line of stdin and prints a users[] entry for the config file.
func hashPassword(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay hash-password", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "user name (required)")
	realm := fs.String("realm", config.Default().Realm, "the relay's realm setting; the HA1 is bound to it")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: relay hash-password --user NAME [--realm REALM] < password

Reads the password from the first line of standard input (never from the
command line, where other users could see it) and prints a users[] entry:
{"name": NAME, "ha1": MD5(NAME:REALM:password), "hash": <bcrypt or argon2id>}.
The ha1 serves RTSP Digest and is password-equivalent for this realm (see
SECURITY.md); the hash serves Basic over RTSPS.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if *user == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "relay hash-password: --user is required and no other arguments are allowed (the password comes from standard input)")
		return ExitUsage
	}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintf(stderr, "relay hash-password: failed to read the password: %v\n", err)
		return ExitFailed
	}
	password := strings.TrimRight(line, "\r\n")
	if password == "" {
		fmt.Fprintln(stderr, "relay hash-password: empty password: write it to standard input, e.g. echo \"$PASSWORD\" | relay hash-password --user alice")
		return ExitUsage
	}
	u, err := auth.HashPassword(*user, *realm, password)
	if err != nil {
		fmt.Fprintf(stderr, "relay hash-password: %v\n", err)
		return ExitUsage
	}
	out, _ := json.Marshal(config.User{Name: u.Name, HA1: u.HA1, Hash: u.Hash})
	fmt.Fprintf(stdout, "%s\n", out)
	return ExitOK
}
