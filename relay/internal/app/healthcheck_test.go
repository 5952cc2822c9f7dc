package app

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/config"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

func TestHealthcheck(t *testing.T) {
	serve := func(status int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(status)
			w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/healthz"
	}
	healthy := serve(http.StatusOK, "ok\n")
	unhealthy := serve(http.StatusInternalServerError, "broken\n")
	dead := "http://" + testutil.ClosedAddr(t) + "/healthz"

	// A server that never answers: only --timeout ends the check, so
	// its case decides by outcome, whatever the machine's load.
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hung.Close)

	// The cases that expect an answer allow a minute, not the default
	// 3 s: a loaded machine may take seconds to answer a local GET, and
	// the outcome, not the time, is what they check.
	const patient = "1m"
	cases := []struct {
		name               string
		args               []string
		wantCode           int
		wantOut, wantError string
	}{
		{"200", []string{"--url", healthy, "--timeout", patient}, ExitOK, healthy + ": ok", ""},
		{"500", []string{"--url", unhealthy, "--timeout", patient}, ExitFailed, "", "500 Internal Server Error: broken"},
		{"nothing listening", []string{"--url", dead, "--timeout", patient}, ExitFailed, "", "connection refused"},
		{"not found", []string{"--url", strings.TrimSuffix(healthy, "/healthz") + "/nope", "--timeout", patient}, ExitFailed, "", "404"},
		{"no answer", []string{"--url", hung.URL + "/healthz", "--timeout", "100ms"}, ExitFailed, "", "no answer in time"},
		{"zero timeout", []string{"--timeout", "0s"}, ExitUsage, "", "--timeout must be positive"},
		{"bad flag", []string{"--nope"}, ExitUsage, "", "-nope"},
		{"extra argument", []string{"now"}, ExitUsage, "", `unexpected argument "now"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			// Through Run, as "relay healthcheck ..." runs it.
			code := Run(context.Background(), append([]string{"healthcheck"}, tc.args...), func(string) string { return "" }, &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d; stdout %q, stderr %q", code, tc.wantCode, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.wantOut) || !strings.Contains(stderr.String(), tc.wantError) {
				t.Errorf("stdout %q (want %q), stderr %q (want %q)", stdout.String(), tc.wantOut, stderr.String(), tc.wantError)
			}
			if code == ExitFailed && strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("reason is not one line: %q", stderr.String())
			}
		})
	}
}

// TestHealthcheckDefaultURL: without --url the check goes to the default
// metricsListen, which is a loopback address with a host.
func TestHealthcheckDefaultURL(t *testing.T) {
	if want := "http://" + config.Default().MetricsListen + "/healthz"; DefaultHealthcheckURL != want {
		t.Errorf("DefaultHealthcheckURL = %q, want %q", DefaultHealthcheckURL, want)
	}
}
