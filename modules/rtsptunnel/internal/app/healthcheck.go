package app

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
)

// healthcheckTimeout bounds the whole check by default: well under the
// images' HEALTHCHECK --timeout=5s, so the process reports its own reason
// instead of being killed by Docker.
const healthcheckTimeout = 3 * time.Second

// Healthcheck is "rtsptunnel healthcheck": it GETs /healthz from the
// module's own metrics server and returns 0 when it answers 200, 1
// otherwise (one line on stderr says why), 2 for bad flags. The images run it
// as their HEALTHCHECK because distroless has no curl.
//
// The address is RTSPTUNNEL_METRICSADDR from environ (the same variables the
// module reads, so inside the container it finds the module's server), the
// default :9600 when unset; an unspecified host (":9600", "0.0.0.0:9600",
// "[::]:9600") is checked on 127.0.0.1. A metrics server moved or disabled
// through the twin is not seen here: give --url then. An empty
// RTSPTUNNEL_METRICSADDR disables the server, so the check fails saying so.
func Healthcheck(args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rtsptunnel healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", "", "URL to check instead of http://<RTSPTUNNEL_METRICSADDR>/healthz")
	timeout := fs.Duration("timeout", healthcheckTimeout, "bound on the whole check")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: rtsptunnel healthcheck [--url URL] [--timeout DURATION]

GETs /healthz from the module's metrics server (RTSPTUNNEL_METRICSADDR, default :9600,
checked on 127.0.0.1) and exits 0 on 200, 1 otherwise with the reason on stderr.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rtsptunnel healthcheck: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "rtsptunnel healthcheck: --timeout must be positive")
		return exitUsage
	}

	target := *rawURL
	if target == "" {
		env := envMap(environ)
		cfg, err := settings.FromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			fmt.Fprintf(stderr, "rtsptunnel healthcheck: invalid settings: %s\n", oneLine(err.Error()))
			return exitFailure
		}
		if cfg.MetricsAddr == "" {
			fmt.Fprintln(stderr, "rtsptunnel healthcheck: the metrics server is disabled (RTSPTUNNEL_METRICSADDR is empty), so there is no /healthz to check")
			return exitFailure
		}
		target, err = healthzURL(cfg.MetricsAddr)
		if err != nil {
			fmt.Fprintf(stderr, "rtsptunnel healthcheck: %v\n", err)
			return exitFailure
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	body, err := checkHealthz(ctx, target)
	if err != nil {
		fmt.Fprintf(stderr, "rtsptunnel healthcheck: %s\n", oneLine(err.Error()))
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: %s\n", target, body)
	return exitOK
}

// healthzURL turns a listen address into the URL of its /healthz, checked
// on loopback when the host is unspecified.
func healthzURL(listenAddr string) (string, error) {
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return "", fmt.Errorf("metricsAddr %q: %w", listenAddr, err)
	}
	if port == "0" {
		return "", fmt.Errorf("metricsAddr %q has port 0 (picked at random), which cannot be checked: give --url", listenAddr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return (&url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: "/healthz"}).String(), nil
}

// maxHealthzBody bounds what is read of the answer and quoted in the reason.
const maxHealthzBody = 512

// checkHealthz GETs target and returns the first line of the body when the
// status is 200, or an error naming the status (and the body's first line)
// or the connection failure. It never uses a proxy: the server is local.
func checkHealthz(ctx context.Context, target string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return "", fmt.Errorf("failed to build the request: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("GET %s: no answer in time: %w", target, err)
		}
		return "", fmt.Errorf("GET %s: %w", target, err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(io.LimitReader(resp.Body, maxHealthzBody)).ReadString('\n')
	line = strings.TrimSpace(line)
	if resp.StatusCode != http.StatusOK {
		if line == "" {
			return "", fmt.Errorf("GET %s: %s", target, resp.Status)
		}
		return "", fmt.Errorf("GET %s: %s: %s", target, resp.Status, line)
	}
	return line, nil
}

// oneLine joins a multi-line message (errors.Join) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
