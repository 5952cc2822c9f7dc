package camera

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ffprobePackets pulls rawURL with ffprobe for seconds of stream time and returns the
// number of video packets it read, with its error output. ffprobe is the independent
// RTSP client: if the simulator only worked with gortsplib it would be no camera.
//
// A missing ffprobe fails the test instead of skipping it: CI installs ffmpeg, and a
// skipped test would hide that it did not.
func ffprobePackets(ctx context.Context, t *testing.T, rawURL string, seconds int, extra ...string) (int, string, error) {
	t.Helper()
	bin, err := exec.LookPath("ffprobe")
	if err != nil {
		t.Fatalf("ffprobe not found in PATH (%v): install ffmpeg (apt-get install ffmpeg; scripts/setup.sh does it)", err)
	}
	args := append([]string{
		"-v", "error",
		"-timeout", "10000000", // socket I/O timeout, µs: generous for a loaded CI machine
	}, extra...)
	args = append(args,
		"-read_intervals", "%+"+strconv.Itoa(seconds),
		"-select_streams", "v:0",
		"-count_packets",
		"-show_entries", "stream=nb_read_packets",
		"-of", "csv=p=0",
		rawURL,
	)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return 0, stderr.String(), err
	}
	n, err := strconv.Atoi(strings.TrimSpace(stdout.String()))
	if err != nil {
		t.Fatalf("unexpected ffprobe output %q (stderr %q): %v", stdout.String(), stderr.String(), err)
	}
	return n, stderr.String(), nil
}

func TestFFprobe(t *testing.T) {
	open := startServer(t, &Server{})
	locked := startServer(t, &Server{Path: "/live/main", User: "admin", Pass: "secret"})
	withCreds := func(s *Server, userinfo string) string {
		return strings.Replace(s.URL(), "rtsp://", "rtsp://"+userinfo+"@", 1)
	}

	tests := []struct {
		name       string
		url        string
		args       []string
		seconds    int    // of stream time to read
		minPackets int    // when the pull must succeed: 25 fps, with slack for the join
		wantStderr string // when it must fail: what ffprobe says
	}{
		{name: "tcp", url: open.URL(), args: []string{"-rtsp_transport", "tcp"}, seconds: 5, minPackets: 100},
		{name: "credentials", url: withCreds(locked, "admin:secret"), args: []string{"-rtsp_transport", "tcp"}, seconds: 5, minPackets: 100},
		// ffmpeg tries UDP first; the camera answers 461 and ffmpeg falls back to TCP.
		{name: "default transport falls back to tcp", url: open.URL(), seconds: 2, minPackets: 40},
		{name: "no credentials", url: locked.URL(), args: []string{"-rtsp_transport", "tcp"}, wantStderr: "401"},
		{name: "wrong password", url: withCreds(locked, "admin:wrong"), args: []string{"-rtsp_transport", "tcp"}, wantStderr: "401"},
		{name: "unknown path", url: open.URL() + "x", args: []string{"-rtsp_transport", "tcp"}, wantStderr: "404"},
	}
	t.Run("group", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()

				n, stderr, err := ffprobePackets(ctx, t, tt.url, max(tt.seconds, 1), tt.args...)
				if tt.wantStderr != "" {
					if err == nil {
						t.Fatalf("ffprobe succeeded with %d packets, want a failure", n)
					}
					if !strings.Contains(stderr, tt.wantStderr) {
						t.Fatalf("ffprobe failed with %v and %q, want %q in it", err, stderr, tt.wantStderr)
					}
					return
				}
				if err != nil {
					t.Fatalf("ffprobe: %v: %s", err, stderr)
				}
				t.Logf("ffprobe read %d packets in %d s of stream", n, tt.seconds)
				if n < tt.minPackets {
					t.Errorf("ffprobe read %d packets, want at least %d", n, tt.minPackets)
				}
			})
		}
	})

	if got := open.Plays(); got != 2 {
		t.Errorf("open camera: Plays() = %d, want 2", got)
	}
	if got := locked.Plays(); got != 1 {
		t.Errorf("locked camera: Plays() = %d, want 1", got)
	}
	if got := locked.AuthFailures(); got != 1 {
		t.Errorf("locked camera: AuthFailures() = %d, want 1 (the wrong password)", got)
	}
}
