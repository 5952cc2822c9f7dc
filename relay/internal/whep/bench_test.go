package whep_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

// benchProfile is a 1.5 Mbit/s camera: 25 frames a second, a 30 kB
// keyframe every second, 6.3 kB frames between.
var benchProfile = testutil.CameraOptions{Interval: 40 * time.Millisecond, Frames: &testutil.Frames{IDR: 30000, P: 6300, GOP: 25}}

// BenchmarkJoin measures a viewer joining a live camera: from its WHEP
// POST until its first RTP packet arrives (the answer, ICE, DTLS, SRTP and
// the cached keyframe), over loopback. Reports p50-ms and p95-ms.
//
//	go test -run '^$' -bench Join -benchtime 50x ./relay/internal/whep
func BenchmarkJoin(b *testing.B) {
	e := newEnvWith(b, h264Format(), loopbackUDP, benchProfile)
	// Someone already watches: each iteration joins a live upstream.
	if _, err := e.src.Acquire(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer e.src.Release()
	var ds []time.Duration
	for b.Loop() {
		c := newClient(b, false)
		offer := []byte(c.offer(b))
		start := time.Now()
		status, answer, loc := post(b, e.http.URL+"/whep/door", "alice-token", "application/sdp", offer)
		if status != http.StatusCreated {
			b.Fatalf("POST: %d %s", status, answer)
		}
		if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-c.pkts:
		case <-time.After(30 * time.Second):
			b.Fatal("no packet within 30 s")
		}
		ds = append(ds, time.Since(start))
		e.delete(b, loc, "alice-token")
		c.pc.Close()
	}
	slices.Sort(ds)
	ms := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) / 1000 }
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.95), "p95-ms")
}

// BenchmarkViewerCPU measures the relay's CPU per WebRTC viewer of a
// 1.5 Mbit/s camera: the viewers (pion) run in a child process, so this
// process's CPU time is the relay's (with the camera simulator, measured
// alone first and subtracted). Reports cpu-ms/s per viewer, i.e. the
// thousandths of a core one viewer costs.
//
//	go test -run '^$' -bench ViewerCPU ./relay/internal/whep
func BenchmarkViewerCPU(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			e := newEnvWith(b, h264Format(), loopbackUDP, benchProfile)
			if _, err := e.src.Acquire(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer e.src.Release()
			const window = 5 * time.Second
			time.Sleep(time.Second) // the upstream settles
			base := cpuOver(window)

			cmd := exec.Command(os.Args[0], "-test.run=^TestViewerProcess$")
			cmd.Env = append(os.Environ(), "WHEP_BENCH_URL="+e.http.URL+"/whep/door", "WHEP_BENCH_VIEWERS="+strconv.Itoa(n))
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() {
				stdin.Close()
				cmd.Wait()
			}()
			sc := bufio.NewScanner(stdout)
			ready := false
			for sc.Scan() {
				if sc.Text() == "ready" {
					ready = true
					break
				}
			}
			if !ready {
				b.Fatal("the viewers' process did not get ready")
			}
			time.Sleep(time.Second) // past the joins
			// One window whatever -benchtime says (BenchmarkJoin wants
			// many iterations).
			busy := cpuOver(window)
			for b.Loop() {
			}
			perViewer := (busy - base).Seconds() / window.Seconds() / float64(n) * 1000
			b.ReportMetric(perViewer, "cpu-ms/s/viewer")
			b.ReportMetric(base.Seconds()/window.Seconds()*1000, "base-cpu-ms/s")
		})
	}
}

// cpuOver returns this process's CPU time (user and system) over d.
func cpuOver(d time.Duration) time.Duration {
	t0 := cpuTime()
	time.Sleep(d)
	return cpuTime() - t0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestViewerProcess is BenchmarkViewerCPU's child: WHEP_BENCH_VIEWERS
// pion viewers of WHEP_BENCH_URL; it prints "ready" once each has a packet
// and stays until its standard input closes. Skipped otherwise.
func TestViewerProcess(t *testing.T) {
	url := os.Getenv("WHEP_BENCH_URL")
	n, _ := strconv.Atoi(os.Getenv("WHEP_BENCH_VIEWERS"))
	if url == "" || n == 0 {
		t.Skip("BenchmarkViewerCPU's child process")
	}
	var cs []*client
	for range n {
		c := newClient(t, false)
		status, answer, _ := post(t, url, "alice-token", "application/sdp", []byte(c.offer(t)))
		if status != http.StatusCreated {
			t.Fatalf("POST: %d %s", status, answer)
		}
		if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	for _, c := range cs {
		<-c.pkts
		// Keep draining: the relay's cost is what is measured, not a
		// full queue here.
		go func() {
			for range c.pkts {
			}
		}()
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
}
