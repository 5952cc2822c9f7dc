package wsserver

import (
	"bytes"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

// countingListener counts the writes on its accepted connections.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestListenerOneWritePerMessage checks that a message written through a
// Conn served on Listener (over TLS, as the relay serves) reaches the socket
// in one write, and intact; without Listener it takes several.
func TestListenerOneWritePerMessage(t *testing.T) {
	for _, corked := range []bool{true, false} {
		name := map[bool]string{true: "corked", false: "plain"}[corked]
		t.Run(name, func(t *testing.T) {
			ctx := testutil.Context(t, testTimeout)
			msg := make([]byte, 32<<10)
			rand.Read(msg)
			var writes atomic.Int64
			wrote := make(chan int64, 1)
			h := &Handler{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Acceptor: fakeAcceptor{func(_, _ string, up func() (net.Conn, error)) error {
				c, err := up()
				if err != nil {
					return err
				}
				defer c.Close()
				before := writes.Load()
				if _, err := c.Write(msg); err != nil {
					return err
				}
				wrote <- writes.Load() - before
				_, err = c.Read(make([]byte, 1)) // until the client closes
				return err
			}}}
			srv := httptest.NewUnstartedServer(h)
			var ln net.Listener = countingListener{srv.Listener, &writes}
			if corked {
				ln = Listener(ln)
			}
			srv.Listener = ln
			srv.StartTLS()
			defer srv.Close()

			ws, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(srv.URL, "https")+"/tunnels/x",
				&websocket.DialOptions{HTTPClient: srv.Client(), HTTPHeader: http.Header{"Authorization": {"Bearer t"}}})
			if err != nil {
				t.Fatal(err)
			}
			defer ws.CloseNow()
			typ, got, err := ws.Read(ctx)
			if err != nil || typ != websocket.MessageBinary || !bytes.Equal(got, msg) {
				t.Fatalf("read %v, %d bytes, %v; want the 32 KiB binary message", typ, len(got), err)
			}
			n := <-wrote
			if corked && n != 1 {
				t.Errorf("the message took %d writes, want 1", n)
			}
			if !corked && n < 2 {
				t.Errorf("without Listener the message took %d writes; the test no longer shows what corking saves", n)
			}
			ws.Close(websocket.StatusNormalClosure, "")
		})
	}
}
