package tunnel

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// BenchmarkSplice measures camera→remote throughput through Splice over real
// loopback sockets: camera TCP → Splice → websocket (ws or wss) → a remote that
// reads and discards. One op is one 32 KiB camera write. Allocations include
// the remote's side, which runs in the same process.
//
//	go test -run '^$' -bench Splice -benchmem ./internal/tunnel/
func BenchmarkSplice(b *testing.B) {
	for _, tls := range []bool{false, true} {
		name := "ws"
		if tls {
			name = "wss"
		}
		b.Run(name, func(b *testing.B) { benchmarkSplice(b, tls) })
	}
}

func benchmarkSplice(b *testing.B, useTLS bool) {
	const chunk = 32 << 10
	received := make(chan int64, 1)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		var n int64
		buf := make([]byte, chunk)
		for {
			_, rd, err := c.Reader(context.Background())
			if err != nil {
				received <- n
				return
			}
			for {
				m, err := rd.Read(buf)
				n += int64(m)
				if err != nil {
					break
				}
			}
		}
	})
	var srv *httptest.Server
	opts := DialOptions{Token: "t"}
	if useTLS {
		srv = httptest.NewTLSServer(handler)
		opts.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	} else {
		srv = httptest.NewServer(handler)
	}
	defer srv.Close()
	endpoint := "ws" + strings.TrimPrefix(srv.URL, "http")

	ws, err := Dial(context.Background(), endpoint, opts)
	if err != nil {
		b.Fatal(err)
	}
	camera, peer := tcpPipe(b)
	done := make(chan Result, 1)
	go func() { done <- Splice(context.Background(), camera, ws, SpliceOptions{}) }()

	cpu0 := writeChunks(b, peer, chunk)
	res := <-done
	got := <-received
	b.StopTimer()
	reportCPU(b, cpu0, int64(b.N)*chunk)
	if want := int64(b.N) * chunk; got != want || res.ToRemote != want {
		b.Fatalf("remote received %d bytes, result %+v, want %d", got, res, want)
	}
}

// BenchmarkTCPRelayBaseline is the reference for BenchmarkSplice: the same two
// loopback hops (camera TCP, then a second TCP connection) joined by a plain
// 32 KiB copy loop, without websocket framing, masking or TLS.
func BenchmarkTCPRelayBaseline(b *testing.B) {
	const chunk = 32 << 10
	camera, peer := tcpPipe(b)
	out, remote := tcpPipe(b)
	copied := make(chan struct{})
	go func() {
		buf := make([]byte, chunk)
		for {
			n, err := camera.Read(buf)
			if n > 0 {
				out.Write(buf[:n])
			}
			if err != nil {
				out.Close()
				close(copied)
				return
			}
		}
	}()
	received := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, remote)
		received <- n
	}()
	cpu0 := writeChunks(b, peer, chunk)
	<-copied
	if got := <-received; got != int64(b.N)*chunk {
		b.Fatalf("received %d bytes", got)
	}
	b.StopTimer()
	reportCPU(b, cpu0, int64(b.N)*chunk)
}

// writeChunks is the timed part of a throughput benchmark: it writes b.N
// chunks of size bytes to the camera end peer and closes it, and returns
// the process's CPU time when the timer started.
func writeChunks(b *testing.B, peer net.Conn, size int) (cpu0 time.Duration) {
	payload := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 = cpuTime()
	for range b.N {
		if _, err := peer.Write(payload); err != nil {
			b.Fatal(err)
		}
	}
	peer.Close()
	return cpu0
}

// cpuTime returns the CPU time (user + system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process's CPU time per MB moved since cpu0
// (everything in the test binary: both ends and the tunnel). On a busy
// machine it is steadier than MB/s, which also counts the time spent
// waiting for a core.
func reportCPU(b *testing.B, cpu0 time.Duration, bytes int64) {
	if bytes > 0 {
		b.ReportMetric(float64(cpuTime()-cpu0)/1e3/(float64(bytes)/1e6), "cpu-µs/MB")
	}
}
