package app

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

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
	dead := testutil.FreeAddr(t)

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

// TestHealthcheckTimeout: a server that does not answer fails the check
// within --timeout, saying so; a --timeout longer than the default is
// honoured too. Both are decided by outcome: the server's answer (or its
// silence) lies far on one side of the timeout in force, never near it.
func TestHealthcheckTimeout(t *testing.T) {
	cases := []struct {
		name     string
		timeout  string
		answerIn time.Duration // after the request arrives, the server answers 200 "ok"
		wantCode int
		wantErr  string
	}{
		// The server answers only after a minute: an ignored --timeout
		// (no bound at all) exits 0 after 60 s, and an overrun of the
		// 200 ms bound past the 20 s limit below is flagged; the default
		// 3 s bound is caught by the next case.
		{"short timeout", "200ms", time.Minute, 1, "no answer in time"},
		// The server answers a second after the default bound: its
		// answer always comes after the default deadline (that deadline is
		// set before the request is sent), so a --timeout ignored in favour
		// of the default fails this case every time, while 60 s leaves a
		// loaded machine ample room.
		{"timeout longer than the default", "60s", healthcheckTimeout + time.Second, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-time.After(tc.answerIn):
					w.Write([]byte("ok\n"))
				case <-release:
				case <-r.Context().Done():
				}
			}))
			defer srv.Close()
			defer close(release)
			var stdout, stderr bytes.Buffer
			start := time.Now()
			code := Healthcheck([]string{"--url", srv.URL + "/healthz", "--timeout", tc.timeout}, nil, &stdout, &stderr)
			if code != tc.wantCode || !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, stdout.String(), stderr.String(), tc.wantCode, tc.wantErr)
			}
			if d := time.Since(start); tc.wantCode == 1 && d > 20*time.Second {
				t.Errorf("took %v with --timeout %s", d, tc.timeout)
			}
		})
	}
}
