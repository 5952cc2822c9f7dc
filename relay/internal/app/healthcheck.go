package app

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// DefaultHealthcheckURL is what "relay healthcheck" checks without --url:
// /healthz of the default metricsListen, 127.0.0.1:9601.
const DefaultHealthcheckURL = "http://127.0.0.1:9601/healthz"

// healthcheckTimeout bounds the check by default: under the image's
// HEALTHCHECK --timeout=5s, so the process reports its own reason instead of
// being killed by Docker.
const healthcheckTimeout = 3 * time.Second

// healthcheck is "relay healthcheck": it GETs the relay's /healthz and
// returns ExitOK on 200, ExitFailed otherwise (one line on stderr says why),
// ExitUsage for bad flags. The image's HEALTHCHECK and the Kubernetes probes
// (relay/deploy) run it because distroless has no curl. It never uses a
// proxy: the server is local.
func healthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", DefaultHealthcheckURL, "the relay's /healthz (metricsListen)")
	timeout := fs.Duration("timeout", healthcheckTimeout, "bound on the whole check")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: relay healthcheck [--url URL] [--timeout DURATION]

GETs the relay's /healthz (on its metricsListen address) and exits 0 on 200,
1 otherwise with the reason on stderr. Give --url when metricsListen is not
the default 127.0.0.1:9601; with metricsListen empty there is nothing to check.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "relay healthcheck: unexpected argument %q\n", fs.Arg(0))
		return ExitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "relay healthcheck: --timeout must be positive")
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	body, err := checkHealthz(ctx, *target)
	if err != nil {
		fmt.Fprintf(stderr, "relay healthcheck: %s\n", strings.Join(strings.Fields(err.Error()), " "))
		return ExitFailed
	}
	fmt.Fprintf(stdout, "%s: %s\n", *target, body)
	return ExitOK
}

// maxHealthzBody bounds what is read of the answer and quoted in the reason.
const maxHealthzBody = 512

// checkHealthz GETs target and returns the first line of the body when the
// status is 200, or an error naming the status (and the body's first line)
// or the connection failure.
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
