package wsserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/token"
)

// fakeAcceptor is an Acceptor built from a func field.
type fakeAcceptor struct {
	accept func(sessionID, tok string, upgrade func() (net.Conn, error)) error
}

// holdingAcceptor returns an acceptor that upgrades every connection,
// sends the Conn on got and, like the core, holds the handler until the
// tunnel ends: until release is closed.
func holdingAcceptor() (acc fakeAcceptor, got <-chan *Conn, release chan struct{}) {
	conns := make(chan *Conn, 1)
	release = make(chan struct{})
	return fakeAcceptor{func(_, _ string, up func() (net.Conn, error)) error {
		c, err := up()
		if err != nil {
			return err
		}
		conns <- c.(*Conn)
		<-release
		return nil
	}}, conns, release
}

func (f fakeAcceptor) AcceptModule(id, tok string, up func() (net.Conn, error)) error {
	return f.accept(id, tok, up)
}

// testTimeout is every test's deadline.
const testTimeout = 10 * time.Second

// serve starts the handler with accept and returns the ws:// base URL.
func serve(t *testing.T, prefix string, accept func(string, string, func() (net.Conn, error)) error) (string, *testutil.LogBuffer) {
	t.Helper()
	logs := &testutil.LogBuffer{}
	h := &Handler{Acceptor: fakeAcceptor{accept}, Prefix: prefix, Logger: logs.Logger(slog.LevelInfo)}
	return serveHandler(t, h), logs
}

// serveHandler serves h as the relay does and returns the ws:// base URL.
func serveHandler(t *testing.T, h *Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = Listener(srv.Listener) // as the relay serves
	srv.Start()
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func dial(ctx context.Context, url, tok string) (*websocket.Conn, *http.Response, error) {
	hdr := http.Header{"TunnelConnectionSource": {"PnpDevice"}}
	if tok != "" {
		hdr.Set("Authorization", "Bearer "+tok)
	}
	return websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr})
}

func TestRouting(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	var mu sync.Mutex
	var gotID, gotTok string
	base, logs := serve(t, "/relay", func(id, tok string, up func() (net.Conn, error)) error {
		mu.Lock()
		gotID, gotTok = id, tok
		mu.Unlock()
		if tok != "good" {
			return token.ErrMismatch
		}
		c, err := up()
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
	tests := []struct {
		path, tok string
		status    int
	}{
		{"/relay/tunnels/abc", "good", http.StatusSwitchingProtocols},
		{"/relay/tunnels/abc", "bad", http.StatusUnauthorized},
		{"/relay/tunnels/abc", "", http.StatusUnauthorized},
		{"/relay/tunnels/", "good", http.StatusSwitchingProtocols}, // the core refuses unknown ids
		{"/tunnels/abc", "good", http.StatusNotFound},
		{"/relay/tunnels/a/b", "good", http.StatusNotFound},
		{"/relay/other", "good", http.StatusNotFound},
	}
	for _, tt := range tests {
		c, resp, err := dial(ctx, base+tt.path, tt.tok)
		if c != nil {
			c.CloseNow()
		}
		if resp == nil {
			t.Fatalf("%s: no response: %v", tt.path, err)
		}
		if resp.StatusCode != tt.status {
			t.Errorf("%s with %q: status %d, want %d", tt.path, tt.tok, resp.StatusCode, tt.status)
		}
		if tt.status == http.StatusUnauthorized {
			body, _ := io.ReadAll(resp.Body)
			if strings.TrimSpace(string(body)) != "unauthorized" || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 body %q, headers %v", body, resp.Header)
			}
		}
	}
	mu.Lock()
	if gotID != "" || gotTok != "good" {
		// last accepted call was for "/relay/tunnels/" with id ""
		t.Errorf("last call id %q tok %q", gotID, gotTok)
	}
	mu.Unlock()
	if strings.Contains(logs.String(), "good") || strings.Contains(logs.String(), `"bad"`) {
		t.Errorf("logs contain a token:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "module connection refused") {
		t.Errorf("no refusal logged:\n%s", logs)
	}
}

func TestBearer(t *testing.T) {
	for in, want := range map[string]string{
		"Bearer abc": "abc", "bearer abc": "abc", "  Bearer   abc ": "abc",
		"": "", "Bearer": "", "Basic abc": "", "abc": "",
	} {
		if got := bearer(in); got != want {
			t.Errorf("bearer(%q) = %q, want %q", in, got, want)
		}
	}
}

// pair serves one accepted connection and returns the relay's side (as the
// core sees it) and the module's websocket. The relay side stays open until
// the test ends.
func pair(t *testing.T) (*Conn, *websocket.Conn) {
	t.Helper()
	ctx := testutil.Context(t, testTimeout)
	acc, got, release := holdingAcceptor()
	base, _ := serve(t, "", acc.accept)
	ws, _, err := dial(ctx, base+"/tunnels/s", "t")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	select {
	case c := <-got:
		t.Cleanup(func() {
			ws.CloseNow() // first, so that c.Close does not wait for a close frame
			c.Close()
			close(release)
		})
		return c, ws
	case <-ctx.Done():
		close(release)
		t.Fatal("no connection")
		return nil, nil
	}
}

func TestConnStream(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	c, ws := pair(t)
	// Each Write is one binary message.
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	typ, msg, err := ws.Read(ctx)
	if err != nil || typ != websocket.MessageBinary || string(msg) != "hello" {
		t.Fatalf("module read %v %q %v", typ, msg, err)
	}
	// Messages read as one stream, large ones included.
	big := bytes.Repeat([]byte("x"), 200000)
	go func() {
		ws.Write(ctx, websocket.MessageBinary, []byte("ab"))
		ws.Write(ctx, websocket.MessageBinary, big)
	}()
	got := make([]byte, 2+len(big))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got[:2]) != "ab" || !bytes.Equal(got[2:], big) {
		t.Fatal("stream corrupted")
	}
	// A text message is an error.
	go func() {
		ws.Write(ctx, websocket.MessageText, []byte("text"))
		ws.Read(ctx) // answer the relay's close frame
	}()
	if _, err := c.Read(make([]byte, 10)); err == nil {
		t.Fatal("text message read without error")
	}
}

// TestConnWriteTo: io.Copy from a Conn takes its WriteTo, which delivers the
// stream intact, ends without error at the module's normal close, and fails
// on a text message.
func TestConnWriteTo(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	c, ws := pair(t)
	msgs := [][]byte{[]byte("ab"), bytes.Repeat([]byte("x"), bufSize), bytes.Repeat([]byte("y"), 3*bufSize+5), []byte("z")}
	go func() {
		for _, m := range msgs {
			ws.Write(ctx, websocket.MessageBinary, m)
		}
		ws.Close(websocket.StatusNormalClosure, "")
	}()
	var got bytes.Buffer
	n, err := io.Copy(&got, c)
	if want := bytes.Join(msgs, nil); err != nil || n != int64(len(want)) || !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("io.Copy = %d, %v; stream intact: %v", n, err, bytes.Equal(got.Bytes(), want))
	}

	c, ws = pair(t)
	go func() {
		ws.Write(ctx, websocket.MessageBinary, []byte("ok"))
		ws.Write(ctx, websocket.MessageText, []byte("text"))
		ws.Read(ctx) // answer the relay's close frame
	}()
	got.Reset()
	if _, err := io.Copy(&got, c); !errors.Is(err, errTextMessage) || got.String() != "ok" {
		t.Fatalf("io.Copy with a text message = %q, %v", got.String(), err)
	}
}

func TestConnEOF(t *testing.T) {
	tests := []struct {
		code    websocket.StatusCode
		wantEOF bool
	}{
		{websocket.StatusNormalClosure, true},
		{websocket.StatusGoingAway, true},
		{websocket.StatusInternalError, false},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			c, ws := pair(t)
			go ws.Close(tt.code, "")
			_, err := c.Read(make([]byte, 10))
			if tt.wantEOF != (err == io.EOF) {
				t.Fatalf("Read after close %v: %v", tt.code, err)
			}
		})
	}
}

func TestConnCloseCodes(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	for _, tt := range []struct {
		name  string
		close func(*Conn) error
		want  websocket.StatusCode
	}{
		{"Close", (*Conn).Close, websocket.StatusNormalClosure},
		{"CloseGoingAway", (*Conn).CloseGoingAway, websocket.StatusGoingAway},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, ws := pair(t)
			go tt.close(c)
			_, _, err := ws.Read(ctx)
			if got := websocket.CloseStatus(err); got != tt.want {
				t.Fatalf("module saw close %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

func TestConnDeadline(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	// Expired before the call: the call fails, the connection lives on.
	c, ws := pair(t)
	c.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	c.SetReadDeadline(time.Time{})
	if _, err := c.Write([]byte("still open")); err != nil {
		t.Fatalf("Write after an expired read deadline: %v", err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "still open" {
		t.Fatalf("module read %q, %v", msg, err)
	}
	// Expiring during a blocked Read: the Read fails and the connection closes.
	c, ws = pair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	if _, _, err := ws.Read(ctx); err == nil {
		t.Fatal("connection still open after a deadline expired during a Read")
	}
}

func TestConnContext(t *testing.T) {
	ctx := testutil.Context(t, testTimeout)
	cctx, cancel := context.WithCancel(ctx)
	got := make(chan *Conn, 1)
	base, _ := serve(t, "", func(_, _ string, up func() (net.Conn, error)) error {
		ws, err := up()
		if err != nil {
			return err
		}
		// Rewrap with a context the test controls.
		c := ws.(*Conn)
		got <- NewConn(cctx, c.ws)
		<-ctx.Done()
		return nil
	})
	ws, _, err := dial(ctx, base+"/tunnels/s", "t")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	c := <-got
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); errc <- err }()
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Read succeeded after the context ended")
		}
	case <-ctx.Done():
		t.Fatal("Read did not return when the context ended")
	}
}
