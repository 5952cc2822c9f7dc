package session

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

// TestManyCycles opens and closes 10,000 tunnels (1,000 with -short), eight
// at a time, with real TCP cameras and real websockets (plain ws://: TLS
// handshakes would only slow the count down), each tunnel closed by the cloud.
// The process's open file descriptors and goroutines must come back to where
// they were after a warm-up; goleak (TestMain) checks that nothing outlives
// the test. The end-to-end TestOpenCloseCycles runs 1,000 cycles through the
// real binary.
func TestManyCycles(t *testing.T) {
	cycles := 10000
	if testing.Short() {
		cycles = 1000
	}
	ctx := testutil.Context(t, 5*time.Minute)

	// Camera: reads until the module hangs up.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var camWG sync.WaitGroup
	var camActive atomic.Int64
	camWG.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			camActive.Add(1)
			camWG.Go(func() {
				defer camActive.Add(-1)
				io.Copy(io.Discard, c)
				c.Close()
			})
		}
	})
	defer func() { ln.Close(); camWG.Wait() }()

	// Cloud: accepts the websocket and ends the tunnel normally.
	var cloudActive atomic.Int64
	cloud := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cloudActive.Add(1)
		defer cloudActive.Add(-1)
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		ws.Close(websocket.StatusNormalClosure, "done")
	}))
	defer cloud.Close()

	s := settings.Defaults()
	s.Targets = settings.Targets{554: ln.Addr().String()}
	s.AllowInsecureWebSocket = true
	s.AllowedRemoteHosts = []string{"127.0.0.1"} // the test cloud is on loopback: name it
	s.SessionRetention = 0
	s.MaxSessions = 1000
	m := &Manager{Settings: s}
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	payload, _ := json.Marshal(map[string]any{
		"remoteEndpoint":           strings.Replace(cloud.URL, "http://", "ws://", 1) + "/tunnels/x",
		"remoteAuthorizationToken": testToken,
		"localPort":                554,
	})

	var failed atomic.Int64
	run := func(n int) time.Duration {
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for next.Add(1) <= int64(n) && ctx.Err() == nil {
					if status, body := m.HandleTunnelOpen(ctx, payload); status != 200 && failed.Add(1) <= 3 {
						t.Errorf("tunnelOpen: %d %s", status, body)
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	settle := func() (fds, goroutines int) {
		testutil.WaitFor(t, ctx, "every tunnel closed", func() bool {
			return m.Snapshot().Summary.Active == 0 && camActive.Load() == 0 && cloudActive.Load() == 0
		})
		cloud.CloseClientConnections() // none expected; keep-alives are off
		// Closing sockets and exiting goroutines settle quickly.
		for range 100 {
			fds, goroutines = countFDs(t), runtime.NumGoroutine()
			time.Sleep(20 * time.Millisecond)
			if countFDs(t) == fds && runtime.NumGoroutine() == goroutines {
				break
			}
		}
		return fds, goroutines
	}

	run(100) // warm up: pools, timers, the first connections
	fds0, g0 := settle()
	took := run(cycles)
	fds1, g1 := settle()
	t.Logf("%d cycles in %s (%.0f/s): fds %d -> %d, goroutines %d -> %d",
		cycles, took.Round(time.Millisecond), float64(cycles)/took.Seconds(), fds0, fds1, g0, g1)
	if fds1 > fds0+2 {
		t.Errorf("open file descriptors %d -> %d after %d cycles", fds0, fds1, cycles)
	}
	if g1 > g0+2 {
		t.Errorf("goroutines %d -> %d after %d cycles", g0, g1, cycles)
	}
	if sum := m.Snapshot().Summary; sum.Opened != uint64(cycles+100) || sum.Failed != 0 {
		t.Errorf("summary %+v, want %d opened, none failed", sum, cycles+100)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(fds)
}
