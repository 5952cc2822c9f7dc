package load

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tools/camerasim/camera"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newCamera(t *testing.T) *Camera {
	cam := &Camera{}
	if err := cam.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cam.Close)
	return cam
}

func TestDownloadUpload(t *testing.T) {
	ctx := testCtx(t)
	cam := newCamera(t)
	w := Window{Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond}
	d, err := Download(ctx, cam.ListenAddr(), w)
	if err != nil || d.Bytes < 1<<20 {
		t.Fatalf("download %+v %v", d, err)
	}
	u, err := Upload(ctx, cam.ListenAddr(), cam, w)
	if err != nil || u.Bytes < 1<<20 {
		t.Fatalf("upload %+v %v", u, err)
	}
	t.Logf("loopback: down %.0f MB/s, up %.0f MB/s", d.MBps(), u.MBps())
}

func TestStreamRate(t *testing.T) {
	ctx := testCtx(t)
	cam := newCamera(t)
	for _, tc := range []struct {
		fps      int
		vectored bool
	}{{25, false}, {0, false}, {25, true}} {
		fps := tc.fps
		c, err := Open(ctx, cam.ListenAddr(), StreamHeader(1_500_000, 1400, fps, tc.vectored), true)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		b0 := c.Received()
		time.Sleep(time.Second)
		got := float64(c.Received()-b0) * 8
		c.Close()
		if got < 1_200_000 || got > 1_800_000 { // generous: the pacing catches up after a busy moment
			t.Errorf("fps %d: %.0f bit/s, want about 1.5 Mbit/s", fps, got)
		}
	}
	// Idle connections receive nothing and stay open.
	c, err := Open(ctx, cam.ListenAddr(), Header("IDLE"), true)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if c.Received() != 1 || c.Ended() || cam.Active() != 1 {
		t.Errorf("idle: received %d, ended %v, active %d", c.Received(), c.Ended(), cam.Active())
	}
	c.Close()
}

func TestStreamPackets(t *testing.T) {
	ctx := testCtx(t)
	cam := newCamera(t)
	nc, err := net.Dial("tcp", cam.ListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write(StreamHeader(1_500_000, 1400, 25, true))
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	pkt := make([]byte, 1400)
	for range 20 {
		if _, err := io.ReadFull(nc, pkt); err != nil {
			t.Fatal(err)
		}
		if pkt[0] != '$' || int(pkt[2])<<8|int(pkt[3]) != 1396 {
			t.Fatalf("bad interleaved header % x", pkt[:4])
		}
	}
	_ = ctx
}

func TestOptions(t *testing.T) {
	sim := &camera.Server{}
	if err := sim.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	nc, err := net.Dial("tcp", sim.ListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := NewRTSPClient(nc, sim.URL())
	for range 5 {
		first, total, err := c.Options()
		if err != nil {
			t.Fatal(err)
		}
		if first <= 0 || total < first {
			t.Fatalf("first %v total %v", first, total)
		}
	}
}

// TestRTSPCameraPlayers: players read the RTSP camera concurrently at its
// rate, and a join reports its marks in order.
func TestRTSPCameraPlayers(t *testing.T) {
	ctx := testCtx(t)
	cam := &RTSPCamera{BitsPerSec: 800_000, FPS: 25}
	if err := cam.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cam.Close)
	var players []*RTSPPlayer
	for range 3 {
		p, err := Play(ctx, cam.URL(), true)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		tm := p.Timing()
		if !(0 < tm.Described && tm.Described <= tm.Playing && tm.Playing <= tm.FirstPacket) {
			t.Errorf("join marks out of order: %+v", tm)
		}
		players = append(players, p)
	}
	before := make([]int64, len(players))
	for i, p := range players {
		before[i] = p.Received()
	}
	const window = time.Second
	time.Sleep(window)
	for i, p := range players {
		bps := float64(p.Received()-before[i]) * 8 / window.Seconds()
		// RTP headers and FU-A indicators add a little to the payload rate;
		// one picture more or less in the window is 4%.
		if bps < 0.85*800_000 || bps > 1.2*800_000 {
			t.Errorf("player %d: %.0f bit/s, want about 800000", i, bps)
		}
		if p.Ended() || p.Lost() != 0 {
			t.Errorf("player %d: ended %v, lost %d", i, p.Ended(), p.Lost())
		}
	}
	if got := cam.Sessions(); got != 3 {
		t.Errorf("camera sessions %d, want 3", got)
	}
}
