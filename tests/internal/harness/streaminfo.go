package harness

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
)

// StreamInfo is what ffprobe saw of the first video stream of an RTSP URL.
type StreamInfo struct {
	// Codec is ffprobe's codec name, e.g. "h264".
	Codec string
	// Width and Height are the coded picture size in pixels.
	Width, Height int
	// FrameRate is the average frame rate in frames per second (ffprobe's
	// avg_frame_rate, or r_frame_rate when the average is unknown); 0 when
	// ffprobe knows neither.
	FrameRate float64
}

// String formats s as "h264 320x240 25 fps".
func (s StreamInfo) String() string {
	out := fmt.Sprintf("%s %dx%d", s.Codec, s.Width, s.Height)
	if s.FrameRate > 0 {
		if r := math.Round(s.FrameRate); math.Abs(s.FrameRate-r) < 0.005 {
			out += fmt.Sprintf(" %.0f fps", r)
		} else {
			out += fmt.Sprintf(" %.2f fps", s.FrameRate)
		}
	}
	return out
}

// FFProbeStream asks ffprobe, over TCP-interleaved RTSP, for the codec,
// resolution and frame rate of url's first video stream. ffprobe reads only
// as much of the stream as it needs to tell (usually the first keyframe).
func FFProbeStream(ctx context.Context, url string) (StreamInfo, error) {
	path, err := exec.LookPath("ffprobe")
	if err != nil {
		return StreamInfo{}, fmt.Errorf("ffprobe not found (install ffmpeg, e.g. scripts/setup.sh): %w", err)
	}
	cmd := exec.CommandContext(ctx, path,
		"-v", "error",
		"-rtsp_transport", "tcp",
		"-timeout", "10000000", // socket I/O timeout, µs
		"-select_streams", "v:0",
		"-show_entries", "stream=codec_name,width,height,avg_frame_rate,r_frame_rate",
		"-of", "default=noprint_wrappers=1",
		url,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return StreamInfo{}, fmt.Errorf("ffprobe %s failed: %w: %s", url, err, strings.TrimSpace(stderr.String()))
	}
	return parseStreamInfo(stdout.String())
}

// parseStreamInfo reads ffprobe's "key=value" lines (-of default=noprint_wrappers=1).
func parseStreamInfo(out string) (StreamInfo, error) {
	var s StreamInfo
	var avg, r float64
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		switch k {
		case "codec_name":
			s.Codec = v
		case "width":
			s.Width, _ = strconv.Atoi(v)
		case "height":
			s.Height, _ = strconv.Atoi(v)
		case "avg_frame_rate":
			avg = parseRate(v)
		case "r_frame_rate":
			r = parseRate(v)
		}
	}
	if s.Codec == "" {
		return s, fmt.Errorf("ffprobe found no video stream: %q", strings.TrimSpace(out))
	}
	s.FrameRate = avg
	if s.FrameRate == 0 {
		s.FrameRate = r
	}
	return s, nil
}

// parseRate turns ffprobe's "25/1" (or "0/0" for unknown) into 25 (or 0).
func parseRate(v string) float64 {
	num, den, ok := strings.Cut(v, "/")
	if !ok {
		f, _ := strconv.ParseFloat(v, 64)
		return f
	}
	n, err1 := strconv.ParseFloat(num, 64)
	d, err2 := strconv.ParseFloat(den, 64)
	if err1 != nil || err2 != nil || d == 0 {
		return 0
	}
	return n / d
}
