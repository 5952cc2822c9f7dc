package tunnel

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type pipeHijacker struct {
	*httptest.ResponseRecorder
	conn net.Conn
}

func (h pipeHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

// wsPipe returns an in-memory websocket pair over net.Pipe (no buffering at all,
// so backpressure is immediate): client is the module's side (its Abort
// closes its pipe end), server the remote's; raw is the server's underlying
// connection. Both are closed at the end of the test.
func wsPipe(t *testing.T) (client *Conn, server *websocket.Conn, raw net.Conn) {
	t.Helper()
	ws, server, raw, clientRaw := wsPipeConns(t)
	return pipeConn(ws, clientRaw), server, raw
}

// pipeConn is ws as Dial would return it, with raw as its network connection.
func pipeConn(ws *websocket.Conn, raw net.Conn) *Conn {
	return &Conn{Conn: ws, conns: &trackedConns{conns: []net.Conn{raw}}}
}

// wsPipeConns is wsPipe with the client's websocket and underlying connection
// apart.
func wsPipeConns(t *testing.T) (client, server *websocket.Conn, serverRaw, clientRaw net.Conn) {
	t.Helper()
	tr := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		c1, c2 := net.Pipe()
		rec := httptest.NewRecorder()
		var err error
		server, err = websocket.Accept(pipeHijacker{rec, c2}, r, nil)
		if err != nil {
			return nil, err
		}
		serverRaw, clientRaw = c2, c1
		resp := rec.Result()
		resp.Body = c1
		return resp, nil
	})
	client, _, err := websocket.Dial(t.Context(), "ws://pipe", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	server.SetReadLimit(-1)
	t.Cleanup(func() {
		client.CloseNow()
		server.CloseNow()
	})
	return client, server, serverRaw, clientRaw
}

// tcpPipe returns two ends of a loopback TCP connection, closed at the end of the test.
func tcpPipe(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	ca, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cb := <-accepted
	if cb == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		ca.Close()
		cb.Close()
	})
	return ca.(*net.TCPConn), cb.(*net.TCPConn)
}

// spliceResult runs Splice in a goroutine and returns a channel with its result.
func startSplice(ctx context.Context, camera net.Conn, ws *Conn, opts SpliceOptions) <-chan Result {
	done := make(chan Result, 1)
	go func() { done <- Splice(ctx, camera, ws, opts) }()
	return done
}

// awaitResult waits for a Splice result or fails the test when ctx ends.
func awaitResult(t *testing.T, ctx context.Context, done <-chan Result) Result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-ctx.Done():
		t.Fatal("Splice did not return")
		return Result{}
	}
}

// floodCamera writes 16 KiB chunks to the camera end peer until a write
// fails, counting the bytes written; done is closed when it stops.
func floodCamera(peer net.Conn) (written *atomic.Int64, done <-chan struct{}) {
	written = new(atomic.Int64)
	d := make(chan struct{})
	go func() {
		defer close(d)
		chunk := make([]byte, 16<<10)
		for {
			n, err := peer.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	return written, d
}

// waitStalled waits until the camera's writes stall: written is above zero
// and has not moved for five polls 100 ms apart (half a second, so that a
// busy machine that merely paused the writer is not taken for a stall), and
// returns it. Writes that never stall (a tunnel that buffers without bound)
// fail the test when ctx ends.
func waitStalled(t *testing.T, ctx context.Context, written *atomic.Int64) int64 {
	t.Helper()
	prev, same := int64(-1), 0
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("the camera's writes never stalled: %d bytes written", written.Load())
		case <-time.After(100 * time.Millisecond):
		}
		cur := written.Load()
		if cur != prev || cur == 0 {
			prev, same = cur, 0
			continue
		}
		if same++; same == 5 {
			return cur
		}
	}
}
