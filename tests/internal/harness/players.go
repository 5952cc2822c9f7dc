package harness

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// FFmpegDecode reads dur of video from url with ffmpeg over TCP-interleaved
// RTSP, decodes it, and returns the number of decoded video frames (one
// framecrc line each): proof that the player got decodable H.264, not just
// packets.
func FFmpegDecode(ctx context.Context, url string, dur time.Duration) (int, error) {
	path, err := exec.LookPath("ffmpeg")
	if err != nil {
		return 0, fmt.Errorf("ffmpeg not found (install ffmpeg, e.g. scripts/setup.sh): %w", err)
	}
	cmd := exec.CommandContext(ctx, path,
		"-v", "error", "-nostdin",
		"-rtsp_transport", "tcp",
		"-timeout", "10000000",
		"-i", url,
		"-t", fmt.Sprintf("%.1f", dur.Seconds()),
		"-map", "0:v:0", "-f", "framecrc", "-")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	frames := 0
	for _, l := range strings.Split(stdout.String(), "\n") {
		if strings.HasPrefix(l, "0,") {
			frames++
		}
	}
	if err != nil {
		return frames, fmt.Errorf("ffmpeg %s failed: %w: %s", url, err, strings.TrimSpace(stderr.String()))
	}
	return frames, nil
}

// GStreamerPlay reads buffers H.264 access units from url with GStreamer's
// rtspsrc (TCP, Digest with user and password), depayloaded and parsed by
// rtph264depay and h264parse: an RTSP client independent of ffmpeg and of
// this project. props are extra rtspsrc properties, e.g.
// "tls-validation-flags=0". It returns nil when GStreamer got them all.
func GStreamerPlay(ctx context.Context, url, user, password string, buffers int, props ...string) error {
	path, err := exec.LookPath("gst-launch-1.0")
	if err != nil {
		return fmt.Errorf("gst-launch-1.0 not found (install gstreamer1.0-tools and plugins, e.g. scripts/setup.sh): %w", err)
	}
	args := append([]string{"-q", "rtspsrc", "location=" + url, "protocols=tcp", "latency=0"}, props...)
	if user != "" {
		args = append(args, "user-id="+user, "user-pw="+password)
	}
	args = append(args, "!", "rtph264depay", "!", "h264parse", "!", "fakesink", fmt.Sprintf("num-buffers=%d", buffers))
	cmd := exec.CommandContext(ctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("gst-launch-1.0 %s failed: %w: %s", url, err, strings.TrimSpace(out.String()))
	}
	return nil
}
