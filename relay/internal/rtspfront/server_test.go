package rtspfront

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

func TestServer(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	got := make(chan string, 4)
	s := &Server{
		Listeners: []Listener{{"a", "127.0.0.1:0"}, {"b", "127.0.0.1:0"}},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Handle: func(ctx context.Context, camera string, conn net.Conn) {
			defer conn.Close()
			got <- camera
			<-ctx.Done() // hold until Close
		},
	}
	if err := s.Initialize(); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"a", "b"} {
		c, err := net.Dial("tcp", s.Addr(i).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		select {
		case cam := <-got:
			if cam != want {
				t.Fatalf("listener %d handed camera %q, want %q", i, cam, want)
			}
		case <-ctx.Done():
			t.Fatal("no connection handed over")
		}
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Close did not return")
	}
	if _, err := net.Dial("tcp", s.Addr(0).String()); err == nil {
		t.Fatal("still listening after Close")
	}
}

func TestInitializeListenError(t *testing.T) {
	busy := testutil.Listen(t)
	s := &Server{
		Listeners: []Listener{{"ok", "127.0.0.1:0"}, {"clash", busy.Addr().String()}},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Handle:    func(context.Context, string, net.Conn) {},
	}
	err := s.Initialize()
	if err == nil || !strings.Contains(err.Error(), "camera clash") {
		t.Fatalf("Initialize: %v, want an error naming camera clash", err)
	}
	s.Close()
}
