package tests

import (
	"context"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
	"github.com/rtsptunnel/rtsptunnel/tools/camerasim/camera"
)

// TestFFProbeStream: the demo's summary names what ffprobe sees of the
// stream; against the camera simulator that is its 320x240 H.264 at 25 fps.
func TestFFProbeStream(t *testing.T) {
	cam := &camera.Server{Path: camera.DefaultPath}
	if err := cam.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := harness.FFProbeStream(ctx, cam.URL())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.String(), "h264 320x240 25 fps"; got != want {
		t.Errorf("FFProbeStream = %q (%+v), want %q", got, info, want)
	}
}
