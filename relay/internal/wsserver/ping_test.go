package wsserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

// freezer is a TCP proxy between the module and the relay. Once frozen it
// forwards nothing more in either direction and closes nothing, like a link
// gone dark (no FIN, no RST). Its goroutines end at close.
type freezer struct {
	ln     net.Listener
	target string
	frozen chan struct{} // closed by freeze
	freeze func()
	done   chan struct{} // closed by close: let go of everything

	mu    sync.Mutex
	conns []net.Conn // guarded by mu
	wg    sync.WaitGroup
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, frozen: make(chan struct{}), done: make(chan struct{})}
	f.freeze = sync.OnceFunc(func() { close(f.frozen) })
	f.wg.Add(1)
	go f.serve()
	return f
}

func (f *freezer) serve() {
	defer f.wg.Done()
	for {
		a, err := f.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", f.target)
		if err != nil {
			a.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, a, b)
		f.mu.Unlock()
		f.wg.Add(2)
		go f.forward(a, b)
		go f.forward(b, a)
	}
}

func (f *freezer) forward(dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-f.frozen:
			<-f.done // hold both connections open, forward nothing
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			src.Close()
			dst.Close()
			return
		}
	}
}

func (f *freezer) close() {
	close(f.done)
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// pinged is one module connection served with pings, through a freezer.
type pinged struct {
	c     *Conn           // the relay's side, as the core sees it
	ws    *websocket.Conn // the module's side
	proxy *freezer
	logs  *testutil.LogBuffer
	pings *atomic.Int64 // pings the module received
}

// pingPair serves one module connection through a Handler with the given
// ping settings. Everything is closed when the test ends.
func pingPair(t *testing.T, interval, timeout time.Duration) pinged {
	t.Helper()
	ctx := testutil.Context(t, testTimeout)
	acc, got, release := holdingAcceptor()
	logs := &testutil.LogBuffer{}
	h := &Handler{
		Logger:       logs.Logger(slog.LevelInfo),
		PingInterval: interval,
		PingTimeout:  timeout,
		Acceptor:     acc,
	}
	base := serveHandler(t, h)
	proxy := newFreezer(t, strings.TrimPrefix(base, "ws://"))
	var pings atomic.Int64
	ws, _, err := websocket.Dial(ctx, "ws://"+proxy.ln.Addr().String()+"/tunnels/s", &websocket.DialOptions{
		HTTPHeader: map[string][]string{"Authorization": {"Bearer t"}},
		OnPingReceived: func(context.Context, []byte) bool {
			pings.Add(1)
			return true // answer it
		},
	})
	if err != nil {
		proxy.close()
		t.Fatal(err)
	}
	select {
	case c := <-got:
		t.Cleanup(func() {
			ws.CloseNow()
			proxy.close() // first, so that c.Close does not wait for a close frame
			c.Close()
			close(release)
		})
		return pinged{c: c, ws: ws, proxy: proxy, logs: logs, pings: &pings}
	case <-ctx.Done():
		ws.CloseNow()
		proxy.close()
		close(release)
		t.Fatal("no connection")
		return pinged{}
	}
}

// pingLoops counts the goroutines running a Conn's ping loop.
func pingLoops() int {
	return strings.Count(testutil.Stacks(), "wsserver.(*Conn).pingLoop(")
}

// waitPingLoops polls until n ping loops run, and fails the test when the
// context ends first.
func waitPingLoops(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	testutil.WaitFor(ctx, t, fmt.Sprintf("%d ping loops", n), func() bool { return pingLoops() == n })
}

// TestPingHealthyPeer: a module that reads answers pings, and a tunnel whose
// consumer keeps a read pending stays open across many ping intervals.
func TestPingHealthyPeer(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	// The pong timeout is generous: the test is about pings not harming a
	// healthy tunnel, on however loaded a machine.
	s := pingPair(t, 50*time.Millisecond, 5*time.Second)
	echoed := make(chan error, 1)
	go func() { _, err := io.Copy(s.c, s.c); echoed <- err }() // echo, as the core keeps a read pending

	// Each ping waits for its pong before the next, so ten pings within the
	// test's timeout show that pongs come back; data flows all along.
	for i := 0; s.pings.Load() < 10; i++ {
		msg := fmt.Sprintf("message %d", i)
		if err := s.ws.Write(ctx, websocket.MessageBinary, []byte(msg)); err != nil {
			t.Fatalf("after %d pings: module write: %v", s.pings.Load(), err)
		}
		if _, got, err := s.ws.Read(ctx); err != nil || string(got) != msg {
			t.Fatalf("after %d pings: module read %q, %v; want %q", s.pings.Load(), got, err, msg)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("only %d pings received", s.pings.Load())
		case <-time.After(10 * time.Millisecond): // pace, not a verdict
		}
	}
	if strings.Contains(s.logs.String(), "module unresponsive") {
		t.Errorf("healthy module reported unresponsive:\n%s", s.logs)
	}
	s.ws.Close(websocket.StatusNormalClosure, "")
	select {
	case err := <-echoed:
		if err != nil {
			t.Errorf("echo ended with %v, want nil at the module's normal close", err)
		}
	case <-ctx.Done():
		t.Fatal("echo did not end")
	}
}

// TestPingFrozenPeer: when the link to the module goes dark, the consumer's
// blocked Read or Write fails with ErrDeadPeer, one WARN line is logged, and
// the ping goroutine has exited once the Conn is closed.
func TestPingFrozenPeer(t *testing.T) {
	tests := []struct {
		name string
		// use blocks on the Conn as the core would and returns the first error.
		use func(c *Conn) error
	}{
		{"blocked in Read", func(c *Conn) error {
			_, err := c.Read(make([]byte, 10))
			return err
		}},
		{"blocked in Write", func(c *Conn) error {
			go io.Copy(io.Discard, c) // the read the core keeps pending; fails alike
			chunk := make([]byte, 32<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					return err
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testutil.Context(t, testTimeout)
			// Detection is due 2.1 s after the freeze, well inside the
			// test's 10 s. The 2 s pong timeout is far beyond what a
			// loaded machine takes to answer a ping while the module
			// reads (the healthy phase before the freeze, including the
			// setup before its first Read), so only the freeze trips it.
			s := pingPair(t, 100*time.Millisecond, 2*time.Second)
			// The tunnel works, then the link freezes.
			if _, err := s.c.Write([]byte("before")); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := s.ws.Read(ctx); err != nil || string(msg) != "before" {
				t.Fatalf("module read %q, %v", msg, err)
			}
			go func() { // a live module keeps reading, answering pings
				for {
					if _, _, err := s.ws.Read(ctx); err != nil {
						return
					}
				}
			}()
			s.proxy.freeze()
			errc := make(chan error, 1)
			go func() { errc <- tt.use(s.c) }()
			select {
			case err := <-errc:
				if !errors.Is(err, ErrDeadPeer) {
					t.Fatalf("got %v, want an error wrapping ErrDeadPeer", err)
				}
				t.Logf("error: %v", err)
			case <-ctx.Done():
				t.Fatal("frozen module not detected within the test's timeout")
			}
			if n := strings.Count(s.logs.String(), `"msg":"module unresponsive"`); n != 1 ||
				!strings.Contains(s.logs.String(), `"session":"s"`) {
				t.Errorf("%d unresponsive lines, want 1 with the session:\n%s", n, s.logs)
			}
			s.c.Close()
			select {
			case <-s.c.pingsDone:
			default:
				t.Fatal("Close returned with the ping goroutine running")
			}
		})
	}
}

// TestPingGoroutine: pings run in one goroutine per Conn that Close ends,
// and none without pings.
func TestPingGoroutine(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		want     int
	}{
		{"disabled", 0, 0},
		{"enabled", time.Hour, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testutil.Context(t, testTimeout)
			waitPingLoops(ctx, t, 0) // earlier tests' connections are gone
			s := pingPair(t, tt.interval, 0)
			go s.ws.Read(ctx) // to answer Close's close frame
			if tt.want == 0 {
				if n := pingLoops(); n != 0 || s.c.pingsDone != nil {
					t.Fatalf("pings disabled, yet %d ping loops run", n)
				}
			}
			waitPingLoops(ctx, t, tt.want)
			if err := s.c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			waitPingLoops(ctx, t, 0)
		})
	}
}
