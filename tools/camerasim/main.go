// Command camerasim is a simulated RTSP camera: it serves a looping H.264 test clip over
// RTSP (TCP-interleaved) on one address and path, optionally behind credentials.
//
// It prints one line "camerasim ready <url>" on standard output once it listens, logs in
// JSON on standard error, and exits 0 on SIGINT or SIGTERM. Run "camerasim --help" for
// the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/rtsptunnel/rtsptunnel/tools/camerasim/camera"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args, serves until ctx is done and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("camerasim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8554", "TCP `address` to serve RTSP on; port 0 picks a free port (see the ready line)")
	path := fs.String("path", camera.DefaultPath, "stream `path`")
	user := fs.String("user", "", "user name required from clients (basic or digest); empty means no authentication")
	pass := fs.String("pass", "", "password required from clients, with --user")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: camerasim [flags]

Serves a looping 320x240 25 fps H.264 test clip as a simulated RTSP camera at
rtsp://<addr><path>, with RTP interleaved on the RTSP TCP connection.
Prints "camerasim ready <url>" on stdout when listening; logs JSON on stderr;
exits 0 on SIGINT/SIGTERM.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "camerasim: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "camerasim: invalid --log-level %q: %v\n", *logLevel, err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	cam := &camera.Server{Addr: *addr, Path: *path, User: *user, Pass: *pass, Logger: logger}
	if err := cam.Initialize(); err != nil {
		logger.Error("failed to start", "error", err)
		return 1
	}
	defer cam.Close()

	fmt.Fprintf(stdout, "camerasim ready %s\n", cam.URL())
	<-ctx.Done()
	logger.Info("shutting down")
	return 0
}
