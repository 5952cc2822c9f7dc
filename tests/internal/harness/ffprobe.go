package harness

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Probe is what ffprobe saw of an RTSP stream.
type Probe struct {
	// Packets counts the video packets read.
	Packets int
	// Keyframes counts the packets flagged as keyframes.
	Keyframes int
	// Bytes sums the packet sizes.
	Bytes int
	// Elapsed is ffprobe's whole run: the RTSP handshake (through a tunnel,
	// the open too) and the reading.
	Elapsed time.Duration
}

// FFProbeIOTimeout is ffprobe's socket I/O timeout in [FFProbe]: a server
// silent this long ends the run with an error.
const FFProbeIOTimeout = 10 * time.Second

// FFProbe reads dur of video from url with ffprobe over TCP-interleaved RTSP
// (the transport a tunnel carries) and counts the packets. ffprobe is the
// independent client: it knows nothing of this project.
func FFProbe(ctx context.Context, url string, dur time.Duration) (Probe, error) {
	return FFProbeTimeout(ctx, url, dur, FFProbeIOTimeout)
}

// FFProbeTimeout is [FFProbe] with ffprobe's socket I/O timeout set to
// ioTimeout (whole microseconds): a test that asserts a server ends a
// connection gives ffprobe a long one, so that its own timeout cannot pass
// for the server's doing.
func FFProbeTimeout(ctx context.Context, url string, dur, ioTimeout time.Duration) (Probe, error) {
	path, err := exec.LookPath("ffprobe")
	if err != nil {
		return Probe{}, fmt.Errorf("ffprobe not found (install ffmpeg, e.g. scripts/setup.sh): %w", err)
	}
	args := []string{
		"-v", "error",
		"-rtsp_transport", "tcp",
		"-timeout", strconv.FormatInt(ioTimeout.Microseconds(), 10), // socket I/O timeout
		"-select_streams", "v:0",
		"-read_intervals", fmt.Sprintf("%%+%.1f", dur.Seconds()),
		"-show_entries", "packet=size,flags",
		"-of", "csv=p=0",
		url,
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	p := Probe{Elapsed: time.Since(start)}
	for _, line := range strings.Split(stdout.String(), "\n") {
		f := strings.Split(strings.TrimSpace(line), ",")
		if len(f) < 2 {
			continue
		}
		n, convErr := strconv.Atoi(f[0])
		if convErr != nil {
			continue
		}
		p.Packets++
		p.Bytes += n
		if strings.HasPrefix(f[1], "K") {
			p.Keyframes++
		}
	}
	if err != nil {
		return p, fmt.Errorf("ffprobe %s failed: %w: %s", url, err, strings.TrimSpace(stderr.String()))
	}
	return p, nil
}

// BackgroundProbe is an [FFProbe] run in its own goroutine, for a player
// that keeps reading while a test breaks things.
type BackgroundProbe struct {
	done chan struct{}
	p    Probe // written before done is closed
	err  error // written before done is closed
}

// StartFFProbe starts [FFProbe] of url for dur in the background; ctx ends
// it early.
func StartFFProbe(ctx context.Context, url string, dur time.Duration) *BackgroundProbe {
	b := &BackgroundProbe{done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.p, b.err = FFProbe(ctx, url, dur)
	}()
	return b
}

// Wait waits for ffprobe to end and returns what [FFProbe] returned.
func (b *BackgroundProbe) Wait() (Probe, error) {
	<-b.done
	return b.p, b.err
}
