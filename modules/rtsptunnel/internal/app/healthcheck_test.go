package app

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// closedAddr returns a 127.0.0.1 address where nothing listens: one just
// bound and closed again.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func healthzServer(t *testing.T, status int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestHealthcheck(t *testing.T) {
	healthy := healthzServer(t, http.StatusOK, "ok: hub connected\n")
	unhealthy := healthzServer(t, http.StatusInternalServerError, "unhealthy: hub disconnected for 2m0s\nsecond line\n")
	_, port, _ := net.SplitHostPort(healthy)
	dead := closedAddr(t)

	cases := []struct {
		name       string
		args, env  []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"200 from RTSPTUNNEL_METRICSADDR", nil, []string{"RTSPTUNNEL_METRICSADDR=" + healthy}, 0, "ok: hub connected", ""},
		{"unspecified host is checked on loopback", nil, []string{"RTSPTUNNEL_METRICSADDR=:" + port}, 0, "http://127.0.0.1:" + port + "/healthz: ok", ""},
		{"0.0.0.0 is checked on loopback", nil, []string{"RTSPTUNNEL_METRICSADDR=0.0.0.0:" + port}, 0, "ok", ""},
		{"--url wins", []string{"--url", "http://" + healthy + "/healthz"}, []string{"RTSPTUNNEL_METRICSADDR=" + dead}, 0, "ok", ""},
		{"500", nil, []string{"RTSPTUNNEL_METRICSADDR=" + unhealthy}, 1, "", "500 Internal Server Error: unhealthy: hub disconnected for 2m0s"},
		{"nothing listening", nil, []string{"RTSPTUNNEL_METRICSADDR=" + dead}, 1, "", "connection refused"},
		{"metrics disabled", nil, []string{"RTSPTUNNEL_METRICSADDR="}, 1, "", "the metrics server is disabled (RTSPTUNNEL_METRICSADDR is empty)"},
		{"port 0", nil, []string{"RTSPTUNNEL_METRICSADDR=127.0.0.1:0"}, 1, "", "port 0"},
		{"invalid settings", nil, []string{"RTSPTUNNEL_MAXSESSIONS=0"}, 1, "", "invalid settings"},
		{"bad flag", []string{"--nope"}, nil, 2, "", "-nope"},
		{"extra argument", []string{"now"}, nil, 2, "", `unexpected argument "now"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Healthcheck(tc.args, tc.env, &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d; stdout %q, stderr %q", code, tc.wantCode, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.wantStdout) {
				t.Errorf("stdout %q lacks %q", stdout.String(), tc.wantStdout)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.wantStderr)
			}
			// One line: Docker shows it as the health log's output.
			if code == 1 && strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("reason is not one line: %q", stderr.String())
			}
		})
	}
}

// TestHealthcheckTimeout: a server that never answers fails the check within
// --timeout, saying so.
func TestHealthcheckTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := Healthcheck([]string{"--url", srv.URL + "/healthz", "--timeout", "200ms"}, nil, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "no answer in time") {
		t.Errorf("exit %d, stderr %q; want 1 and no answer in time", code, stderr.String())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v with --timeout 200ms", d)
	}
}
